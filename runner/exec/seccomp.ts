/**
 * The seccomp filter every bwrap step runs under (bwrap --seccomp FD reads it as a classic BPF program:
 * an array of `struct sock_filter`, 8 bytes each, in host byte order; linux/filter.h, linux/seccomp.h).
 *
 * It refuses to create unix sockets: a read-only bind does not stop connect() on a socket file, so a step
 * that could create an AF_UNIX socket could reach any listener whose socket file it can see (and abstract
 * sockets, which no mount hides, in the host's network namespace... the step has its own, but a socket
 * file in an allowed folder is still reachable). With socket(AF_UNIX) and socketpair(AF_UNIX) refused,
 * connect() on AF_UNIX has nothing to work with: the step inherits no unix socket but its stdout/stderr
 * pair, which is already connected. io_uring is refused too, since IORING_OP_SOCKET creates sockets
 * without the socket() system call. Everything else is allowed; this is one more wall, not the sandbox.
 *
 *   ld  arch                      ; seccomp_data.arch
 *   jeq AUDIT_ARCH_<native>       ; any other ABI (i386 and x32 on x86_64, arm on aarch64) is refused whole
 *   ld  nr
 *   (x86_64) jge 0x40000000       ; the x32 ABI's bit: refused
 *   jeq io_uring_{setup,enter,register} -> ENOSYS
 *   jeq socket, socketpair -> ld args[0] (low word); jeq AF_UNIX -> EAFNOSUPPORT
 *   ret ALLOW
 *
 * Pure: bytes out, nothing read or written.
 */

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
  ioUring: readonly number[];
  /** Syscall numbers at or above this belong to another ABI on the same arch (x32 on x86_64). */
  foreignFrom?: number;
}

const ARCHES: Record<SeccompArch, ArchTable> = {
  // arch/x86/entry/syscalls/syscall_64.tbl
  x64: { audit: 0xc000003e, socket: 41, socketpair: 53, ioUring: [425, 426, 427], foreignFrom: 0x40000000 },
  // include/uapi/asm-generic/unistd.h
  arm64: { audit: 0xc00000b7, socket: 198, socketpair: 199, ioUring: [425, 426, 427] },
};

// linux/bpf_common.h
const BPF_LD_W_ABS = 0x00 | 0x00 | 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K = 0x05 | 0x10 | 0x00; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K = 0x05 | 0x30 | 0x00; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K = 0x06 | 0x00; // BPF_RET | BPF_K

// linux/seccomp.h
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_ERRNO = 0x00050000;

/** Offsets in struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64). */
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16; // little-endian: the low 32 bits of args[0] come first

const AF_UNIX = 1;
const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;

/** The instructions of the filter for a host of `arch`. */
export function toSeccompProgram(arch: SeccompArch): BpfInstruction[] {
  const table = ARCHES[arch];
  const ret = (k: number): BpfInstruction => ({ code: BPF_RET_K, jt: 0, jf: 0, k });
  const ld = (offset: number): BpfInstruction => ({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: offset });
  // Jumps are relative to the next instruction; each target below is counted from its own position.
  const program: BpfInstruction[] = [];
  const ALLOW = ret(SECCOMP_RET_ALLOW);
  const REFUSE_ABI = ret(SECCOMP_RET_ERRNO | EPERM);
  const REFUSE_URING = ret(SECCOMP_RET_ERRNO | ENOSYS);
  const REFUSE_UNIX = ret(SECCOMP_RET_ERRNO | EAFNOSUPPORT);
  // Layout, with the four returns at the end: ... [ALLOW] [REFUSE_ABI] [REFUSE_URING] [REFUSE_UNIX]
  const body: ((at: number, end: number) => BpfInstruction)[] = [];
  body.push(() => ld(OFFSET_ARCH));
  body.push((at, end) => ({ code: BPF_JEQ_K, jt: 0, jf: end + 1 - (at + 1), k: table.audit }));
  body.push(() => ld(OFFSET_NR));
  if (table.foreignFrom !== undefined) {
    const from = table.foreignFrom;
    body.push((at, end) => ({ code: BPF_JGE_K, jt: end + 1 - (at + 1), jf: 0, k: from }));
  }
  for (const nr of table.ioUring) body.push((at, end) => ({ code: BPF_JEQ_K, jt: end + 2 - (at + 1), jf: 0, k: nr }));
  // socket / socketpair: check the domain; otherwise go on to the next test.
  body.push(() => ({ code: BPF_JEQ_K, jt: 1, jf: 0, k: table.socket })); // to the domain check, past socketpair's
  body.push((at, end) => ({ code: BPF_JEQ_K, jt: 0, jf: end - (at + 1), k: table.socketpair }));
  body.push(() => ld(OFFSET_ARG0_LOW));
  body.push((at, end) => ({ code: BPF_JEQ_K, jt: end + 3 - (at + 1), jf: end - (at + 1), k: AF_UNIX }));
  const end = body.length; // index of ALLOW
  body.forEach((make, at) => program.push(make(at, end)));
  program.push(ALLOW, REFUSE_ABI, REFUSE_URING, REFUSE_UNIX);
  for (const insn of program) {
    if (insn.jt > 255 || insn.jf > 255 || insn.jt < 0 || insn.jf < 0) throw new Error('seccomp jump out of range'); // a bug here, not input
  }
  return program;
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
export function toSeccompFilterFor(arch: string): Buffer | undefined {
  if (arch !== 'x64' && arch !== 'arm64') return undefined;
  return toSeccompBytes(toSeccompProgram(arch));
}
