/** Picks how steps are launched on this host, given what a capsule requires. */
import { directLauncher, type Launcher } from './exec-capsule.js';

export function selectLauncher(requirement: 'required' | 'best-effort'): Launcher | { unavailable: string } {
  if (requirement === 'required') return { unavailable: 'step isolation (bubblewrap) is not wired into this build yet' };
  return directLauncher;
}
