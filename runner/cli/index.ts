// Placeholder entry so the build and the binary script have a target; the commands land in this folder.
export async function runCli(argv: string[]): Promise<number> {
  if (argv.includes('--version')) {
    console.log('edge-runner 0.1.0');
    return 0;
  }
  console.error('usage: edge-runner <command>');
  return 2;
}
