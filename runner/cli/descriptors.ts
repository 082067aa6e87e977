/**
 * Closes the file descriptors this process inherited without close-on-exec. Node marks every descriptor it
 * opens close-on-exec, but whatever the runner's own parent left open above stderr (a pipe of the shell
 * that started it, a socket of a supervisor) is passed on by every spawn, and bubblewrap does not close
 * descriptors: a step would hold them inside its sandbox, a way out that no mount or seccomp rule sees.
 * The CLI calls this first; the runner needs no descriptor it did not open. Linux: the flags come from
 * /proc/self/fdinfo (O_CLOEXEC is 02000000 octal there).
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';

const O_CLOEXEC = 0o2000000;
const FLAGS = /^flags:\s+([0-7]+)$/m;

/** Returns the descriptors it closed. Without /proc (not Linux) it closes nothing. */
export function closeInheritedDescriptors(): number[] {
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return [];
  }
  const closed: number[] = [];
  for (const name of names) {
    const fd = Number(name);
    if (!Number.isSafeInteger(fd) || fd <= 2) continue;
    let info: string;
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // gone meanwhile (readdir's own descriptor)
    }
    const flags = FLAGS.exec(info);
    if (flags === null || (Number.parseInt(flags[1]!, 8) & O_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // already closed
    }
  }
  return closed;
}
