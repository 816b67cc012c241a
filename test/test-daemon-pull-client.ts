/**
 * The pieces of `lazypull pull`'s daemon client that need no daemon: which
 * command lines it takes over (anything else goes to the CLI's own parser)
 * and the gRPC framing of its JSON messages. The client against a real
 * daemon, containerd and registry is in test-pull.ts (e).
 */
import assert from 'node:assert/strict';
import { parseThinPullArgs } from '../src/cli/daemon-pull-client';
import { encodeJsonFrame, JsonFrameDecoder, MAX_MESSAGE_BYTES } from '../src/snapshotter/pull-protocol';

describe('lazypull pull daemon client: arguments and framing', function () {
  it('reads every flag of `lazypull pull`, before or after the reference, as `--flag value` or `--flag=value`', function () {
    assert.deepEqual(parseThinPullArgs(['127.0.0.1:5000/a:v1']), { reference: '127.0.0.1:5000/a:v1', plainHttp: false, json: false, noDaemon: false });
    assert.deepEqual(
      parseThinPullArgs([
        '--address', '/run/c.sock', 'r/x:1', '--namespace=k8s.io', '--snapshotter', 'lp', '--plain-http', '--hosts-dir', 'hosts',
        '--platform', 'linux/arm64', '--json', '--snapshotter-address=/tmp/lp.sock',
      ]),
      {
        reference: 'r/x:1', address: '/run/c.sock', namespace: 'k8s.io', snapshotter: 'lp', hostsDir: 'hosts', platform: 'linux/arm64',
        snapshotterAddress: '/tmp/lp.sock', plainHttp: true, json: true, noDaemon: false,
      },
    );
    assert.equal(parseThinPullArgs(['r/x:1', '--no-daemon'])?.noDaemon, true);
  });

  it('leaves to the CLI what it cannot be sure to read the same way', function () {
    for (const args of [
      [],
      ['--help'],
      ['-h'],
      ['r/x:1', 'r/y:1'],
      ['r/x:1', '--unknown-flag'],
      ['r/x:1', '--address'],
      ['r/x:1', '--address', '--json'],
      ['r/x:1', '--address='],
      ['r/x:1', '--json=yes'],
    ]) {
      assert.equal(parseThinPullArgs(args), undefined, args.join(' '));
    }
  });

  it('frames JSON messages as gRPC does and reads them back however the bytes are split', function () {
    const messages = [{ layer: { index: 0, digest: 'sha256:ab' } }, { result: { name: 'x', layers: [] } }, { progress: { done: 5 } }];
    const bytes = Buffer.concat(messages.map(encodeJsonFrame));
    assert.equal(bytes[0], 0, 'not compressed');
    assert.equal(bytes.readUInt32BE(1), Buffer.byteLength(JSON.stringify(messages[0])));
    for (const step of [1, 3, 7, bytes.length]) {
      const decoder = new JsonFrameDecoder();
      const out: unknown[] = [];
      for (let i = 0; i < bytes.length; i += step) out.push(...decoder.push(bytes.subarray(i, i + step)));
      assert.deepEqual(out, messages, `chunks of ${step}`);
      assert.equal(decoder.leftover, 0);
    }
    const partial = new JsonFrameDecoder();
    assert.deepEqual(partial.push(bytes.subarray(0, 8)), []);
    assert.equal(partial.leftover, 8);
  });

  it('refuses compressed and oversized messages', function () {
    const compressed = encodeJsonFrame({ a: 1 });
    compressed[0] = 1;
    assert.throws(() => new JsonFrameDecoder().push(compressed), /compressed/);
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
    assert.throws(() => new JsonFrameDecoder().push(huge), /too large/);
  });
});
