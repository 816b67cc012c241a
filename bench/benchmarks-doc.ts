/**
 * docs/benchmarks.md is made of sections, each rewritten only by the
 * benchmark that measures it (`node dist/bench/run.js cold-start` leaves the
 * conversion numbers alone, and the other way round). Sections sit between
 * `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a fixed order. Text
 * between the title and the first section (notes written by hand) is kept.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const SECTIONS = ['cold-start', 'cli-startup', 'rollout', 'conversion'] as const;
export type SectionName = (typeof SECTIONS)[number];

export const BENCHMARKS_DOC = join(__dirname, '..', '..', 'docs', 'benchmarks.md');
const TITLE = '# Benchmarks';

/** What stands between the title and the first section: written by hand, never by a benchmark. */
function preamble(text: string): string {
  if (!text.startsWith(TITLE)) return '';
  const first = text.indexOf('<!-- bench:');
  return (first < 0 ? '' : text.slice(TITLE.length, first)).trim();
}

function parse(text: string): Map<SectionName, string> {
  const sections = new Map<SectionName, string>();
  for (const name of SECTIONS) {
    const m = new RegExp(`<!-- bench:${name} -->\\n([\\s\\S]*?)\\n?<!-- /bench:${name} -->`).exec(text);
    if (m) sections.set(name, m[1]!.trim());
  }
  // A document from before the sections held the conversion benchmark alone.
  if (sections.size === 0 && text.startsWith(TITLE)) sections.set('conversion', text.slice(TITLE.length).trim());
  return sections;
}

/** Replace one section of the document, keeping the others. */
export async function updateBenchmarksDoc(name: SectionName, body: string, path = BENCHMARKS_DOC): Promise<void> {
  const before = existsSync(path) ? await readFile(path, 'utf8') : '';
  const sections = parse(before);
  sections.set(name, body.trim());
  const notes = preamble(before);
  const parts = [TITLE, '', ...(notes !== '' ? [notes, ''] : [])];
  for (const section of SECTIONS) {
    const text = sections.get(section);
    if (text !== undefined) parts.push(`<!-- bench:${section} -->`, text, `<!-- /bench:${section} -->`, '');
  }
  await writeFile(path, parts.join('\n'));
}
