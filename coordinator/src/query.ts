/**
 * The query-string rules every route shares: only the parameters a route names, each at most once, whole
 * numbers in range, short non-empty text; anything else is 400 with the route's code.
 */
import { HttpError } from './errors.js';
import type { RouteContext } from './http.js';

export function badQuery(why: string, code = 'OPERATOR_BAD_QUERY'): HttpError {
  return new HttpError(400, code, `The query is not valid: ${why}.`);
}

export function onlyParams(ctx: RouteContext, names: readonly string[], code: string): void {
  const seen = new Set<string>();
  for (const name of ctx.query.keys()) {
    if (!names.includes(name)) throw badQuery(`it has an unknown parameter`, code);
    if (seen.has(name)) throw badQuery(`${name} is given twice`, code);
    seen.add(name);
  }
}

export function queryInteger(ctx: RouteContext, name: string, min: number, max: number, fallback: number, code: string): number {
  const text = ctx.query.get(name);
  if (text === null) return fallback;
  if (!/^(?:0|[1-9][0-9]{0,15})$/.test(text)) throw badQuery(`${name} is not a whole number`, code);
  const value = Number(text);
  if (value < min || value > max) throw badQuery(`${name} is not between ${min} and ${max}`, code);
  return value;
}

export function textParam<K extends string>(ctx: RouteContext, name: K): Partial<Record<K, string>> {
  const value = ctx.query.get(name);
  if (value === null) return {};
  if (value.length === 0 || value.length > 256) throw badQuery(`${name} is empty or too long`);
  return { [name]: value } as Partial<Record<K, string>>;
}
