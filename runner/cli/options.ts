/** A repeatable option (`--key A --key B`) collected into a list. */
export function collectOption(value: string, previous: string[]): string[] {
  return [...previous, value];
}
