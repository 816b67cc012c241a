/**
 * Labels on a pod: the keys the controller puts on every pod, and labels a
 * user adds to one pod after it was created (`lazypull rollout label`, the
 * `kubectl label pod` of lazypull), e.g. a zone for `scatterStrategy` or a
 * canary mark for `weightPriority`.
 *
 * Added labels belong to the pod's sandbox, as Kubernetes labels belong to
 * the Pod object: an in-place update keeps them (same sandbox); a recreated
 * pod (a new sandbox, even under the same name) starts without them. CRI
 * sandbox labels cannot change, so the controller keeps them in its store
 * and merges them into the pod's labels wherever it reads them.
 *
 * Keys the CloneSet decides are refused: the selector's (changing one would
 * take the pod out of the set), the template's (an update rewrites them) and
 * the controller's own.
 */
import { LazypullError } from '../errors';
import { labelKeyProblem, labelValueProblem } from './label-syntax';

/** The set a pod belongs to. */
export const LABEL_CLONESET = 'lazypull.io/cloneset';
/** The pod's name (sandbox names are not selectable in CRI). */
export const LABEL_POD_NAME = 'lazypull.io/pod-name';
/** The revision the pod (or container) runs. */
export const LABEL_REVISION = 'lazypull.io/revision';

const CONTROLLER_KEYS = [LABEL_CLONESET, LABEL_POD_NAME, LABEL_REVISION];

/** A change to a pod's added labels, as a JSON merge patch: a key to its new value, or to null to remove it. */
export type LabelPatch = Record<string, string | null>;

export interface LabelChange {
  /** The added labels after the patch. */
  labels: Record<string, string>;
  /** kubectl's words: "labeled" (a label set or changed), "unlabeled" (only removals), "not labeled" (no change). */
  result: 'labeled' | 'unlabeled' | 'not labeled';
  /** Keys asked to be removed that the pod did not have (kubectl: `label "x" not found.`). */
  notFound: string[];
  /** Keys that already have another value while overwrite is off: nothing was changed. */
  conflicts: Array<{ key: string; value: string }>;
}

function invalid(field: string, problem: string): never {
  throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${field}: ${problem}`, { field });
}

/** Kubernetes' field names: metadata.labels for a key, metadata.labels[KEY] for its value. */
function checkLabel(key: string, value: string | null): void {
  const keyProblem = labelKeyProblem(key);
  if (keyProblem !== undefined) invalid('metadata.labels', keyProblem);
  const valueProblem = value === null ? undefined : labelValueProblem(value);
  if (valueProblem !== undefined) invalid(`metadata.labels[${key}]`, valueProblem);
}

/** kubectl's label arguments: `KEY=VALUE` sets a label, `KEY-` removes one. */
export function parseLabelArgs(args: string[]): LabelPatch {
  if (args.length === 0) invalid('metadata.labels', 'at least one label update is required (KEY=VALUE or KEY-)');
  const patch: LabelPatch = {};
  for (const arg of args) {
    const eq = arg.indexOf('=');
    let key: string;
    let value: string | null;
    if (eq >= 0) {
      key = arg.slice(0, eq);
      value = arg.slice(eq + 1);
    } else if (arg.endsWith('-')) {
      key = arg.slice(0, -1);
      value = null;
    } else {
      return invalid('metadata.labels', `unknown label spec ${JSON.stringify(arg)} (KEY=VALUE sets a label, KEY- removes it)`);
    }
    checkLabel(key, value);
    if (key in patch) {
      const both = (patch[key] === null) !== (value === null);
      invalid('metadata.labels', both ? `can not both modify and remove label ${JSON.stringify(key)} in the same command` : `label ${JSON.stringify(key)} is given twice`);
    }
    patch[key] = value;
  }
  return patch;
}

/** The body of `PATCH /clonesets/NAME/pods/POD/labels`: `{"labels": {KEY: VALUE | null}, "overwrite": bool}`. */
export function parseLabelRequest(body: unknown): { patch: LabelPatch; overwrite: boolean } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) invalid('body', 'must be a JSON object {"labels": {...}, "overwrite": false}');
  const { labels, overwrite, ...rest } = body as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) invalid(unknown[0], 'unknown field (supported: labels, overwrite)');
  if (overwrite !== undefined && typeof overwrite !== 'boolean') invalid('overwrite', 'must be true or false');
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) invalid('metadata.labels', 'must be a mapping of label keys to a value or null (remove)');
  const patch: LabelPatch = {};
  for (const [key, value] of Object.entries(labels as Record<string, unknown>)) {
    if (value !== null && typeof value !== 'string') invalid(`metadata.labels[${key}]`, 'must be a string, or null to remove the label');
    checkLabel(key, value);
    patch[key] = value;
  }
  if (Object.keys(patch).length === 0) invalid('metadata.labels', 'at least one label update is required');
  return { patch, overwrite: overwrite === true };
}

/** Refuse keys the CloneSet or the controller decide. */
export function checkOwnedKeys(patch: LabelPatch, selector: Record<string, string>, templateLabels: Record<string, string>): void {
  for (const key of Object.keys(patch)) {
    if (CONTROLLER_KEYS.includes(key)) invalid('metadata.labels', `${JSON.stringify(key)} is set by the controller`);
    if (key in selector) invalid('metadata.labels', `${JSON.stringify(key)} is in the CloneSet's selector (spec.selector.matchLabels); changing it would take the pod out of the set`);
    if (key in templateLabels) invalid('metadata.labels', `${JSON.stringify(key)} comes from the pod template (spec.template.metadata.labels); change the CloneSet instead`);
  }
}

/** The pod's added labels after `patch`; with a conflict (and overwrite off) nothing changes, as kubectl refuses. */
export function applyLabelPatch(added: Record<string, string>, patch: LabelPatch, overwrite: boolean): LabelChange {
  const labels = { ...added };
  const notFound: string[] = [];
  const conflicts: Array<{ key: string; value: string }> = [];
  let set = false;
  let removed = false;
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      if (key in labels) {
        delete labels[key];
        removed = true;
      } else {
        notFound.push(key);
      }
    } else if (labels[key] !== value) {
      if (key in labels && !overwrite) conflicts.push({ key, value: labels[key] });
      labels[key] = value;
      set = true;
    }
  }
  if (conflicts.length > 0) return { labels: { ...added }, result: 'not labeled', notFound, conflicts };
  return { labels, result: set ? 'labeled' : removed ? 'unlabeled' : 'not labeled', notFound, conflicts };
}
