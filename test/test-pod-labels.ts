/**
 * Labels added to pods (`rollout label`): kubectl's argument syntax, the
 * HTTP body, Kubernetes' key and value rules with the field named, keys the
 * CloneSet owns, and kubectl's outcomes (labeled, unlabeled, not labeled,
 * --overwrite).
 */
import { strict as assert } from 'node:assert';
import { isLazypullError } from '../src/errors';
import { applyLabelPatch, checkOwnedKeys, parseLabelArgs, parseLabelRequest } from '../src/controller/pod-labels';

/** The call throws LAZYPULL_ERR_INVALID_ARGUMENT naming `field`, with a message matching `message`. */
function rejects(call: () => unknown, field: string, message: RegExp): void {
  assert.throws(call, (err: unknown) => {
    assert.ok(isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'), String(err));
    assert.equal(err.details.field, field);
    assert.match(err.message, message);
    assert.ok(err.message.startsWith(`${field}: `), err.message);
    return true;
  });
}

describe('pod labels', function () {
  describe('kubectl arguments', function () {
    it('KEY=VALUE sets, KEY- removes, an empty value is a value', function () {
      assert.deepEqual(parseLabelArgs(['zone=a', 'example.com/tier=web', 'old-', 'empty=']), { zone: 'a', 'example.com/tier': 'web', old: null, empty: '' });
    });

    it('rejects bad keys and values as Kubernetes does, naming the field', function () {
      rejects(() => parseLabelArgs(['Zone!=a']), 'metadata.labels', /"Zone!" is not a valid label key/);
      rejects(() => parseLabelArgs(['-zone=a']), 'metadata.labels', /not a valid label key/);
      rejects(() => parseLabelArgs([`${'k'.repeat(64)}=a`]), 'metadata.labels', /not a valid label key/);
      rejects(() => parseLabelArgs(['UPPER.example.com/zone=a']), 'metadata.labels', /not a valid label key/);
      rejects(() => parseLabelArgs(['bad!-']), 'metadata.labels', /not a valid label key/);
      rejects(() => parseLabelArgs(['zone=a b']), 'metadata.labels[zone]', /"a b" must be at most 63/);
      rejects(() => parseLabelArgs(['zone=-a']), 'metadata.labels[zone]', /starting and ending with a letter or digit/);
      rejects(() => parseLabelArgs([`zone=${'v'.repeat(64)}`]), 'metadata.labels[zone]', /at most 63/);
      assert.deepEqual(parseLabelArgs([`zone=${'v'.repeat(63)}`]), { zone: 'v'.repeat(63) });
    });

    it('rejects what kubectl rejects: nothing to do, no = and no -, a key twice or set and removed', function () {
      rejects(() => parseLabelArgs([]), 'metadata.labels', /at least one label update/);
      rejects(() => parseLabelArgs(['zone']), 'metadata.labels', /unknown label spec "zone"/);
      rejects(() => parseLabelArgs(['zone=a', 'zone-']), 'metadata.labels', /can not both modify and remove label "zone"/);
      rejects(() => parseLabelArgs(['zone=a', 'zone=b']), 'metadata.labels', /label "zone" is given twice/);
    });
  });

  describe('HTTP body', function () {
    it('a mapping of keys to a value or null, and overwrite', function () {
      assert.deepEqual(parseLabelRequest({ labels: { zone: 'a', old: null }, overwrite: true }), { patch: { zone: 'a', old: null }, overwrite: true });
      assert.deepEqual(parseLabelRequest({ labels: { zone: 'a' } }), { patch: { zone: 'a' }, overwrite: false });
    });

    it('rejects other shapes, naming the field', function () {
      rejects(() => parseLabelRequest([]), 'body', /JSON object/);
      rejects(() => parseLabelRequest({ labels: { zone: 'a' }, force: true }), 'force', /unknown field/);
      rejects(() => parseLabelRequest({ labels: { zone: 'a' }, overwrite: 'yes' }), 'overwrite', /true or false/);
      rejects(() => parseLabelRequest({ labels: ['zone=a'] }), 'metadata.labels', /mapping/);
      rejects(() => parseLabelRequest({ labels: {} }), 'metadata.labels', /at least one/);
      rejects(() => parseLabelRequest({ labels: { zone: 7 } }), 'metadata.labels[zone]', /must be a string, or null/);
      rejects(() => parseLabelRequest({ labels: { 'a b': 'x' } }), 'metadata.labels', /not a valid label key/);
    });
  });

  it('refuses keys the CloneSet or the controller decide', function () {
    const selector = { app: 'web' };
    const template = { app: 'web', tier: 'front' };
    rejects(() => checkOwnedKeys({ app: 'x' }, selector, template), 'metadata.labels', /in the CloneSet's selector/);
    rejects(() => checkOwnedKeys({ tier: null }, selector, template), 'metadata.labels', /comes from the pod template/);
    for (const key of ['lazypull.io/cloneset', 'lazypull.io/pod-name', 'lazypull.io/revision']) {
      rejects(() => checkOwnedKeys({ [key]: 'x' }, selector, template), 'metadata.labels', /set by the controller/);
    }
    checkOwnedKeys({ zone: 'a', 'lazypull.io/other': 'x' }, selector, template);
  });

  describe('applying a change, as kubectl reports it', function () {
    it('labeled, unlabeled, not labeled', function () {
      assert.deepEqual(applyLabelPatch({}, { zone: 'a' }, false), { labels: { zone: 'a' }, result: 'labeled', notFound: [], conflicts: [] });
      assert.deepEqual(applyLabelPatch({ zone: 'a', tier: 'x' }, { tier: null }, false), { labels: { zone: 'a' }, result: 'unlabeled', notFound: [], conflicts: [] });
      assert.deepEqual(applyLabelPatch({ zone: 'a' }, { zone: 'a' }, false), { labels: { zone: 'a' }, result: 'not labeled', notFound: [], conflicts: [] });
      assert.deepEqual(applyLabelPatch({ zone: 'a' }, { gone: null }, false), { labels: { zone: 'a' }, result: 'not labeled', notFound: ['gone'], conflicts: [] });
      assert.equal(applyLabelPatch({ zone: 'a', tier: 'x' }, { tier: null, canary: 'true' }, false).result, 'labeled');
    });

    it('another value needs overwrite; without it nothing changes', function () {
      const refused = applyLabelPatch({ zone: 'a' }, { zone: 'b', canary: 'true' }, false);
      assert.deepEqual(refused.conflicts, [{ key: 'zone', value: 'a' }]);
      assert.deepEqual(refused.labels, { zone: 'a' });
      assert.deepEqual(applyLabelPatch({ zone: 'a' }, { zone: 'b' }, true), { labels: { zone: 'b' }, result: 'labeled', notFound: [], conflicts: [] });
    });

    it('does not change the labels it was given', function () {
      const added = { zone: 'a' };
      applyLabelPatch(added, { zone: null, tier: 'x' }, true);
      assert.deepEqual(added, { zone: 'a' });
    });
  });
});
