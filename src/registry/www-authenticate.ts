/**
 * Parsing of WWW-Authenticate challenges (RFC 7235): one header may hold
 * several challenges, each a scheme followed by comma-separated
 * `name=value` or `name="quoted value"` parameters.
 */

export interface Challenge {
  /** Lowercased scheme: "basic", "bearer", ... */
  scheme: string;
  /** Parameter names are lowercased; values are unquoted. */
  params: Record<string, string>;
}

export function parseWwwAuthenticate(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const headers = Array.isArray(header) ? header : [header];
  const challenges: Challenge[] = [];
  for (const text of headers) challenges.push(...parseOne(text));
  return challenges;
}

function parseOne(text: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  let current: Challenge | undefined;
  const skipSpace = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < text.length && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(text[i] as string)) i++;
    return text.slice(start, i);
  };

  while (i < text.length) {
    skipSpace();
    if (text[i] === ',') {
      i++;
      continue;
    }
    const token = readToken();
    if (token.length === 0) {
      i++; // skip a stray character rather than loop forever
      continue;
    }
    skipSpace();
    if (text[i] === '=') {
      // A parameter (or token68) of the current challenge.
      i++;
      skipSpace();
      let value = '';
      if (text[i] === '"') {
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < text.length) i++;
          value += text[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < text.length && text[i] !== ',' && text[i] !== ' ') i++;
        value = text.slice(start, i);
      }
      if (current !== undefined) current.params[token.toLowerCase()] = value;
    } else {
      current = { scheme: token.toLowerCase(), params: {} };
      challenges.push(current);
    }
  }
  return challenges;
}
