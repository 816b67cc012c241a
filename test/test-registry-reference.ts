/** Pure parts of the registry client: references, challenges, scopes, docker config keys. */

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isLazypullError } from '../src/errors';
import { covers, mergeScopes } from '../src/registry/auth';
import { DockerConfig, normalizeConfigKey } from '../src/registry/docker-config';
import { formatReference, ImageReference, parseReference } from '../src/registry/reference';
import { parseWwwAuthenticate } from '../src/registry/www-authenticate';

const D = `sha256:${'a'.repeat(64)}`;

describe('registry reference parsing', () => {
  const valid: Array<[string, ImageReference]> = [
    ['ubuntu', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: 'latest' }],
    ['ubuntu:22.04', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: '22.04' }],
    ['docker.io/ubuntu', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: 'latest' }],
    ['index.docker.io/foo/bar:x', { registry: 'registry-1.docker.io', repository: 'foo/bar', tag: 'x' }],
    ['foo/bar', { registry: 'registry-1.docker.io', repository: 'foo/bar', tag: 'latest' }],
    ['127.0.0.1:5000/foo', { registry: '127.0.0.1:5000', repository: 'foo', tag: 'latest' }],
    ['127.0.0.1:5000/foo/bar:v1', { registry: '127.0.0.1:5000', repository: 'foo/bar', tag: 'v1' }],
    [`127.0.0.1:5000/foo@${D}`, { registry: '127.0.0.1:5000', repository: 'foo', digest: D }],
    [`127.0.0.1:5000/foo:v1@${D}`, { registry: '127.0.0.1:5000', repository: 'foo', tag: 'v1', digest: D }],
    ['localhost/foo', { registry: 'localhost', repository: 'foo', tag: 'latest' }],
    ['localhost:5000/a/b/c:t', { registry: 'localhost:5000', repository: 'a/b/c', tag: 't' }],
    ['ghcr.io/org/my-app_x.y__z:1.0_rc-1', { registry: 'ghcr.io', repository: 'org/my-app_x.y__z', tag: '1.0_rc-1' }],
    ['[::1]:5000/foo:t', { registry: '[::1]:5000', repository: 'foo', tag: 't' }],
    ['example.com/foo:Tag_1', { registry: 'example.com', repository: 'foo', tag: 'Tag_1' }],
  ];
  for (const [text, expected] of valid) {
    it(`parses ${text}`, () => {
      assert.deepEqual(parseReference(text), expected);
      // Formatting gives a string that parses back to the same reference.
      assert.deepEqual(parseReference(formatReference(expected)), expected);
    });
  }

  const invalid: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Ubuntu', /lowercase/],
    ['127.0.0.1:5000/Foo', /lowercase/],
    ['127.0.0.1:5000', /no repository/],
    ['127.0.0.1:5000/', /missing repository/],
    ['foo:', /tag ""/],
    ['foo:-bad', /tag "-bad"/],
    ['foo@sha256:abc', /digest/],
    [`foo@sha256:${'A'.repeat(64)}`, /lowercase hex/],
    ['foo//bar', /empty path component/],
    ['foo/bar-', /path component "bar-"/],
    ['docker://foo', /scheme/],
    ['foo bar', /whitespace/],
    [`a/${'b'.repeat(300)}`, /longer than 255/],
  ];
  for (const [text, why] of invalid) {
    it(`rejects ${JSON.stringify(text)}`, () => {
      assert.throws(
        () => parseReference(text),
        (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_REFERENCE_INVALID') && why.test(err.message) && err.message.includes(`"${text}"`),
      );
    });
  }

  it('formats tag and digest', () => {
    assert.equal(formatReference({ registry: 'h:1', repository: 'r', tag: 't' }), 'h:1/r:t');
    assert.equal(formatReference({ registry: 'h:1', repository: 'r', digest: D }), `h:1/r@${D}`);
    assert.equal(formatReference({ registry: 'h:1', repository: 'r', tag: 't', digest: D }), `h:1/r:t@${D}`);
  });
});

describe('registry WWW-Authenticate parsing', () => {
  it('parses a Bearer challenge with quoted parameters', () => {
    const [c] = parseWwwAuthenticate(
      'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"',
    );
    assert.deepEqual(c, {
      scheme: 'bearer',
      params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' },
    });
  });
  it('parses Basic, several challenges and header arrays', () => {
    assert.deepEqual(parseWwwAuthenticate('Basic realm="x y"'), [{ scheme: 'basic', params: { realm: 'x y' } }]);
    const many = parseWwwAuthenticate(['Basic realm=a, Bearer realm="b", service=c', 'Negotiate']);
    assert.deepEqual(
      many.map((c) => c.scheme),
      ['basic', 'bearer', 'negotiate'],
    );
    assert.deepEqual(many[1]?.params, { realm: 'b', service: 'c' });
    assert.deepEqual(parseWwwAuthenticate(undefined), []);
  });
});

describe('registry scopes', () => {
  it('merges actions per repository', () => {
    assert.deepEqual(mergeScopes(['repository:a:pull', 'repository:a:push', 'repository:b:pull']), [
      'repository:a:pull,push',
      'repository:b:pull',
    ]);
    assert.deepEqual(mergeScopes(['repository:a:pull repository:c:push']), ['repository:a:pull', 'repository:c:push']);
  });
  it('knows when a token scope covers another', () => {
    assert.ok(covers(['repository:a:pull,push'], ['repository:a:pull']));
    assert.ok(covers(['repository:a:pull,push', 'repository:b:pull'], ['repository:b:pull']));
    assert.ok(!covers(['repository:a:pull'], ['repository:a:pull,push']));
    assert.ok(!covers(['repository:a:pull,push'], ['repository:ab:pull']));
  });
});

describe('registry docker config', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lazypull-dockercfg-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('normalises the key forms the docker CLI writes', () => {
    assert.equal(normalizeConfigKey('127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(normalizeConfigKey('http://127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(normalizeConfigKey('https://127.0.0.1:5000/v1/'), '127.0.0.1:5000');
    assert.equal(normalizeConfigKey('https://index.docker.io/v1/'), 'registry-1.docker.io');
    assert.equal(normalizeConfigKey('docker.io'), 'registry-1.docker.io');
  });

  it('reads auth (base64) and username/password entries', async () => {
    const path = join(dir, 'config.json');
    writeFileSync(
      path,
      JSON.stringify({
        auths: {
          'https://127.0.0.1:5000': { auth: Buffer.from('alice:pa:ss').toString('base64') },
          'http://127.0.0.1:6000/': { username: 'bob', password: 'secret' },
          'https://index.docker.io/v1/': { auth: Buffer.from('hub:hubpw').toString('base64') },
        },
      }),
    );
    const config = new DockerConfig(path);
    assert.deepEqual(await config.lookup('127.0.0.1:5000'), { username: 'alice', password: 'pa:ss', source: `docker config ${path}` });
    assert.equal((await config.lookup('127.0.0.1:6000'))?.username, 'bob');
    assert.equal((await config.lookup('registry-1.docker.io'))?.password, 'hubpw');
    assert.equal(await config.lookup('127.0.0.1:7000'), undefined);
  });

  it('treats a missing file as no credentials and a broken one as an error without its content', async () => {
    assert.equal(await new DockerConfig(join(dir, 'nope.json')).lookup('h:1'), undefined);
    const path = join(dir, 'broken.json');
    writeFileSync(path, '{"auths": {"h:1": {"auth": "c2VjcmV0OnNlY3JldA=="}');
    await assert.rejects(new DockerConfig(path).lookup('h:1'), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'));
      assert.match(err.message, /not valid JSON/);
      assert.ok(!err.message.includes('c2VjcmV0'));
      return true;
    });
  });

  it('runs a credential helper named in credHelpers', async () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const helper = join(bin, 'docker-credential-lzptest');
    writeFileSync(
      helper,
      '#!/bin/sh\nread server\nif [ "$server" = "127.0.0.1:5000" ]; then echo \'{"Username":"helper","Secret":"hs"}\'; else echo "credentials not found in native keychain"; exit 1; fi\n',
      { mode: 0o755 },
    );
    const path = join(dir, 'helper.json');
    writeFileSync(path, JSON.stringify({ credHelpers: { '127.0.0.1:5000': 'lzptest', '127.0.0.1:5001': 'lzptest' } }));
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath ?? ''}`;
    try {
      const config = new DockerConfig(path);
      const found = await config.lookup('127.0.0.1:5000');
      assert.equal(found?.username, 'helper');
      assert.equal(found?.password, 'hs');
      assert.equal(await config.lookup('127.0.0.1:5001'), undefined);
    } finally {
      process.env.PATH = oldPath;
    }
  });
});
