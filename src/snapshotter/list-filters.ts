/**
 * containerd's filter syntax for List, the subset snapshot listings use:
 * filters are OR-ed; within one, comma-separated terms are AND-ed; a term is
 * a field path (`name`, `parent`, `kind`, `labels.KEY` or `labels."KEY"`),
 * optionally followed by `==`, `!=` or `~=` (regular expression) and a
 * value, which may be quoted. A bare field path tests that it is set.
 */
import { SnapshotError } from './snapshot-errors';

interface Term {
  path: string[];
  op?: '==' | '!=' | '~=';
  value?: string;
  regex?: RegExp;
}

export type ParsedFilters = Term[][];

function unquote(text: string): string {
  const t = text.trim();
  if (t.length >= 2 && ((t.startsWith('"') && t.endsWith('"')) || (t.startsWith("'") && t.endsWith("'")))) {
    return t.startsWith('"') ? (JSON.parse(t) as string) : t.slice(1, -1);
  }
  return t;
}

/** Split on `sep` outside quotes. */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let quote: string | undefined;
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === '\\' && i + 1 < text.length) {
        current += c + text[++i];
        continue;
      }
      if (c === quote) quote = undefined;
      current += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      current += c;
    } else if (text.startsWith(sep, i)) {
      parts.push(current);
      current = '';
      i += sep.length - 1;
    } else current += c;
  }
  if (quote) throw new SnapshotError('INVALID_ARGUMENT', `filter "${text}" has an unclosed quote`);
  parts.push(current);
  return parts;
}

function parseTerm(text: string): Term {
  const match = /^(.*?)(==|!=|~=)(.*)$/s.exec(text);
  const selector = match ? match[1] : text;
  const path = splitOutsideQuotes(selector.trim(), '.').map(unquote);
  if (path.length === 0 || path.some((p) => p === '')) throw new SnapshotError('INVALID_ARGUMENT', `filter term "${text}" has no field`);
  if (!match) return { path };
  const op = match[2] as Term['op'];
  const value = unquote(match[3]);
  if (op === '~=') {
    try {
      return { path, op, value, regex: new RegExp(value) };
    } catch {
      throw new SnapshotError('INVALID_ARGUMENT', `filter "${text}" has an invalid regular expression`);
    }
  }
  return { path, op, value };
}

export function parseFilters(filters: string[]): ParsedFilters {
  return filters.filter((f) => f.trim() !== '').map((f) => splitOutsideQuotes(f, ',').map((t) => parseTerm(t.trim())));
}

function fieldValue(path: string[], item: { name: string; parent: string; kind: string; labels: Record<string, string> }): string | undefined {
  const [head, ...rest] = path;
  if (head === 'labels') {
    const key = rest.join('.');
    return key === '' ? undefined : item.labels[key];
  }
  if (rest.length > 0) return undefined;
  if (head === 'name') return item.name;
  // containerd treats name and parent as always present: `parent==""` selects base layers.
  if (head === 'parent') return item.parent;
  if (head === 'kind') return item.kind.toLowerCase();
  return undefined;
}

export function matchesFilters(filters: ParsedFilters, item: { name: string; parent: string; kind: string; labels: Record<string, string> }): boolean {
  if (filters.length === 0) return true;
  return filters.some((terms) =>
    terms.every((t) => {
      const v = fieldValue(t.path, item);
      if (!t.op) return v !== undefined;
      if (t.op === '==') return v === t.value || (t.path[0] === 'kind' && v === t.value?.toLowerCase());
      if (t.op === '!=') return v !== t.value;
      return v !== undefined && t.regex!.test(v);
    }),
  );
}
