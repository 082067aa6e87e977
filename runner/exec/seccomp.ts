/**
 * The seccomp filter every bwrap step runs under (bwrap --seccomp FD reads it as a classic BPF program:
 * an array of `struct sock_filter`, 8 bytes each, in host byte order; linux/filter.h, linux/seccomp.h).
 * Its name in the evidence is SYSCALL_FILTER; what that version refuses:
 *
 *   - socket() of any family but AF_INET, AF_INET6 (the step's own network namespace: loopback only) and
 *     AF_NETLINK (glibc's getaddrinfo asks the kernel for interfaces), with EAFNOSUPPORT: an allowlist, so
 *     AF_UNIX (a read-only bind does not stop connect() on a socket file in a listed folder), AF_VSOCK (a
 *     virtual machine's way to its hypervisor, which no network namespace closes) and every other family
 *     are out of reach. Within those, by allowlist too (EPROTONOSUPPORT): inet sockets of type stream or
 *     datagram with protocol 0, TCP, UDP, ICMP or ICMPv6 (no SCTP, DCCP or raw: protocols whose module the
 *     kernel would load on demand), and netlink of protocol NETLINK_ROUTE only (a root runner's steps share
 *     the host's user namespace, where NETLINK_KOBJECT_UEVENT broadcasts the host's device events);
 *     socketpair() of AF_UNIX only: an unnamed connected pair, which reaches nothing (v4: v3 refused it,
 *     and with it Node's child_process and Python's asyncio inside steps);
 *   - io_uring (ENOSYS): IORING_OP_SOCKET creates sockets without socket(); and Linux AIO (io_setup and
 *     the rest, ENOSYS): its events are counted once for the whole host (fs.aio-max-nr), so one step could
 *     take them all from the host's own databases;
 *   - new namespaces: clone and unshare with any CLONE_NEW* flag, setns (EPERM), and clone3 (ENOSYS, whose
 *     flags sit in memory a filter cannot read; glibc then falls back to clone). A user namespace would give
 *     the step every capability inside it: its own mounts (a tmpfs past the bounds), raw and packet
 *     sockets, netfilter;
 *   - the kernel keyrings (add_key, keyctl, request_key: EPERM): a uid's keyring outlives its processes,
 *     so two steps run as the same uid could pass data through it; and bpf, perf_event_open and
 *     userfaultfd (EPERM), kernel surface no step needs;
 *   - every system call of another ABI (i386 and x32 on x86_64; arm on aarch64): EPERM.
 * Everything else is allowed. The filter is one more wall, not the sandbox.
 *
 * Pure: bytes out, nothing read or written.
 */

/** The filter's name in the evidence (run.sandbox.syscallFilter); a new version when what it refuses changes. */
export const SYSCALL_FILTER = 'edge-runner/v4';

/**
 * The same filter, with socket() of AF_UNIX allowed too (protocol 0, any type): for a step with a socket or tcp grant (exec/resources.ts), which it reaches through a unix socket.
 */
export const SYSCALL_FILTER_UNIX = 'edge-runner/v4+unix';

export interface SeccompOptions {
  /** socket(AF_UNIX, ...) allowed (SYSCALL_FILTER_UNIX); refused with EAFNOSUPPORT otherwise. */
  unix?: boolean;
}

/** A classic BPF instruction (struct sock_filter). */
export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

export type SeccompArch = 'x64' | 'arm64';

interface ArchTable {
  /** AUDIT_ARCH_* (linux/audit.h). */
  audit: number;
  socket: number;
  socketpair: number;
  clone: number;
  clone3: number;
  unshare: number;
  setns: number;
  ioUring: readonly number[];
  /** io_setup, io_destroy, io_getevents, io_submit, io_cancel, io_pgetevents. */
  aio: readonly number[];
  /** add_key, keyctl, request_key, bpf, perf_event_open, userfaultfd. */
  refused: readonly number[];
  /** Syscall numbers at or above this belong to another ABI on the same arch (x32 on x86_64). */
  foreignFrom?: number;
}

const ARCHES: Record<SeccompArch, ArchTable> = {
  // arch/x86/entry/syscalls/syscall_64.tbl
  x64: {
    audit: 0xc000003e,
    socket: 41,
    socketpair: 53,
    clone: 56,
    clone3: 435,
    unshare: 272,
    setns: 308,
    ioUring: [425, 426, 427],
    aio: [206, 207, 208, 209, 210, 333],
    refused: [248, 250, 249, 321, 298, 323],
    foreignFrom: 0x40000000,
  },
  // include/uapi/asm-generic/unistd.h
  arm64: {
    audit: 0xc00000b7,
    socket: 198,
    socketpair: 199,
    clone: 220,
    clone3: 435,
    unshare: 97,
    setns: 268,
    ioUring: [425, 426, 427],
    aio: [0, 1, 4, 2, 3, 292],
    refused: [217, 219, 218, 280, 241, 282],
  },
};

// linux/bpf_common.h
const BPF_LD_W_ABS = 0x00 | 0x00 | 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K = 0x05 | 0x10 | 0x00; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K = 0x05 | 0x30 | 0x00; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K = 0x05 | 0x40 | 0x00; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K = 0x06 | 0x00; // BPF_RET | BPF_K
const BPF_ALU_AND_K = 0x04 | 0x50 | 0x00; // BPF_ALU | BPF_AND | BPF_K

// linux/seccomp.h
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_ERRNO = 0x00050000;

/** Offsets in struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64). */
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16; // little-endian: the low 32 bits of args[0] come first
const OFFSET_ARG1_LOW = 24;
const OFFSET_ARG2_LOW = 32;

/** linux/socket.h: the families a step may open. The kernel reads the domain as an int (the low word). */
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
/** The socket type without SOCK_NONBLOCK and SOCK_CLOEXEC (linux/net.h SOCK_TYPE_MASK). */
const SOCK_TYPE_MASK = 0xf;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
/** netinet/in.h: 0 (the type's default), TCP, UDP, ICMP, ICMPv6; linux/netlink.h NETLINK_ROUTE is 0. */
const INET_PROTOCOLS = [0, 6, 17, 1, 58];
const NETLINK_ROUTE = 0;

/** linux/sched.h: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET; unshare also CLONE_NEWTIME. */
const CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;
/** CLONE_NEWTIME is 0x80, which in clone()'s flags is part of the exit signal (low byte): unshare only. */
const CLONE_NEWTIME = 0x00000080;

const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;
const EPROTONOSUPPORT = 93;

/**
 * A classic BPF program with symbolic jump targets, turned into instructions with relative offsets: the
 * filter reads as the list of its rules instead of as hand-counted jumps.
 */
type Op =
  | { op: 'ld'; offset: number }
  | { op: 'and'; k: number }
  | { op: 'jeq' | 'jge' | 'jset'; k: number; then: string; else?: string }
  | { op: 'ret'; k: number }
  | { op: 'label'; name: string };

function assemble(ops: readonly Op[]): BpfInstruction[] {
  const labels = new Map<string, number>();
  let count = 0;
  for (const op of ops) {
    if (op.op === 'label') labels.set(op.name, count);
    else count += 1;
  }
  const out: BpfInstruction[] = [];
  const offset = (label: string | undefined): number => {
    if (label === undefined) return 0; // fall through
    const target = labels.get(label);
    const jump = target === undefined ? -1 : target - (out.length + 1);
    if (jump < 0 || jump > 255) throw new Error(`seccomp jump to ${label} out of range`); // a bug here, not input
    return jump;
  };
  for (const op of ops) {
    switch (op.op) {
      case 'label':
        break;
      case 'ld':
        out.push({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: op.offset });
        break;
      case 'and':
        out.push({ code: BPF_ALU_AND_K, jt: 0, jf: 0, k: op.k >>> 0 });
        break;
      case 'ret':
        out.push({ code: BPF_RET_K, jt: 0, jf: 0, k: op.k >>> 0 });
        break;
      default: {
        const code = op.op === 'jeq' ? BPF_JEQ_K : op.op === 'jge' ? BPF_JGE_K : BPF_JSET_K;
        out.push({ code, jt: offset(op.then), jf: offset(op.else), k: op.k >>> 0 });
      }
    }
  }
  return out;
}

/** The instructions of the filter for a host of `arch`. */
export function toSeccompProgram(arch: SeccompArch, options: SeccompOptions = {}): BpfInstruction[] {
  const t = ARCHES[arch];
  const to = (k: number, then: string): Op => ({ op: 'jeq', k, then });
  return assemble([
    { op: 'ld', offset: OFFSET_ARCH },
    { op: 'jeq', k: t.audit, then: 'native', else: 'eperm' },
    { op: 'label', name: 'native' },
    { op: 'ld', offset: OFFSET_NR },
    ...(t.foreignFrom !== undefined ? [{ op: 'jge', k: t.foreignFrom, then: 'eperm' } as const] : []),
    to(t.socket, 'family'),
    to(t.socketpair, 'pair'),
    to(t.clone, 'clone'),
    to(t.unshare, 'unshare'),
    to(t.setns, 'eperm'),
    to(t.clone3, 'enosys'),
    ...t.ioUring.map((nr) => to(nr, 'enosys')),
    ...t.aio.map((nr) => to(nr, 'enosys')),
    ...t.refused.map((nr) => to(nr, 'eperm')),
    { op: 'ret', k: SECCOMP_RET_ALLOW },
    { op: 'label', name: 'family' },
    { op: 'ld', offset: OFFSET_ARG0_LOW },
    to(AF_INET, 'inet'),
    to(AF_INET6, 'inet'),
    to(AF_NETLINK, 'netlink'),
    ...(options.unix ? [to(AF_UNIX, 'unix')] : []),
    { op: 'ret', k: SECCOMP_RET_ERRNO | EAFNOSUPPORT },
    ...(options.unix
      ? ([
          { op: 'label', name: 'unix' },
          { op: 'ld', offset: OFFSET_ARG2_LOW },
          to(0, 'allow'),
          { op: 'ret', k: SECCOMP_RET_ERRNO | EPROTONOSUPPORT },
        ] as Op[])
      : []),
    // socketpair: an unnamed, connected AF_UNIX pair reaches no socket file and no listener, and libuv
    // (Node's child_process) and Python's asyncio make their pipes with it; every other family is refused.
    { op: 'label', name: 'pair' },
    { op: 'ld', offset: OFFSET_ARG0_LOW },
    to(AF_UNIX, 'allow'),
    { op: 'ret', k: SECCOMP_RET_ERRNO | EAFNOSUPPORT },
    { op: 'label', name: 'inet' },
    { op: 'ld', offset: OFFSET_ARG1_LOW },
    { op: 'and', k: SOCK_TYPE_MASK },
    to(SOCK_STREAM, 'inet-protocol'),
    to(SOCK_DGRAM, 'inet-protocol'),
    { op: 'ret', k: SECCOMP_RET_ERRNO | EPROTONOSUPPORT },
    { op: 'label', name: 'inet-protocol' },
    { op: 'ld', offset: OFFSET_ARG2_LOW },
    ...INET_PROTOCOLS.map((protocol) => to(protocol, 'allow')),
    { op: 'ret', k: SECCOMP_RET_ERRNO | EPROTONOSUPPORT },
    { op: 'label', name: 'netlink' },
    { op: 'ld', offset: OFFSET_ARG2_LOW },
    to(NETLINK_ROUTE, 'allow'),
    { op: 'ret', k: SECCOMP_RET_ERRNO | EPROTONOSUPPORT },
    { op: 'label', name: 'clone' },
    { op: 'ld', offset: OFFSET_ARG0_LOW },
    { op: 'jset', k: CLONE_NEW_ANY, then: 'eperm', else: 'allow' },
    { op: 'label', name: 'unshare' },
    { op: 'ld', offset: OFFSET_ARG0_LOW },
    { op: 'jset', k: CLONE_NEW_ANY | CLONE_NEWTIME, then: 'eperm', else: 'allow' },
    { op: 'label', name: 'allow' },
    { op: 'ret', k: SECCOMP_RET_ALLOW },
    { op: 'label', name: 'eperm' },
    { op: 'ret', k: SECCOMP_RET_ERRNO | EPERM },
    { op: 'label', name: 'enosys' },
    { op: 'ret', k: SECCOMP_RET_ERRNO | ENOSYS },
  ]);
}

/** The program as bwrap reads it: struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; } in host order. */
export function toSeccompBytes(program: readonly BpfInstruction[], littleEndian = true): Buffer {
  const out = Buffer.alloc(program.length * 8);
  program.forEach((insn, i) => {
    if (littleEndian) {
      out.writeUInt16LE(insn.code, i * 8);
      out.writeUInt32LE(insn.k >>> 0, i * 8 + 4);
    } else {
      out.writeUInt16BE(insn.code, i * 8);
      out.writeUInt32BE(insn.k >>> 0, i * 8 + 4);
    }
    out.writeUInt8(insn.jt, i * 8 + 2);
    out.writeUInt8(insn.jf, i * 8 + 3);
  });
  return out;
}

/** The filter for this process's architecture, or undefined where no table exists (then bwrap is refused). */
export function toSeccompFilterFor(arch: string, options: SeccompOptions = {}): Buffer | undefined {
  if (arch !== 'x64' && arch !== 'arm64') return undefined;
  return toSeccompBytes(toSeccompProgram(arch, options));
}
