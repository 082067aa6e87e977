/**
 * The seccomp filter as bytes (runner/exec/seccomp.ts): its encoding, and its decisions, checked by running
 * the program through a small classic-BPF interpreter over seccomp_data values (linux/seccomp.h).
 */
import { describe, expect, it } from 'vitest';
import {
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  toSeccompBytes,
  toSeccompFilterFor,
  toSeccompProgram,
  type BpfInstruction,
} from '../../../runner/exec/seccomp.js';

const AUDIT_ARCH_X86_64 = 0xc000003e;
const AUDIT_ARCH_I386 = 0x40000003;
const AUDIT_ARCH_AARCH64 = 0xc00000b7;

/** struct seccomp_data: nr, arch, instruction_pointer, args[6], little-endian. */
function seccompData(arch: number, nr: number, args: number[] = []): Buffer {
  const data = Buffer.alloc(64);
  data.writeUInt32LE(nr >>> 0, 0);
  data.writeUInt32LE(arch >>> 0, 4);
  args.forEach((arg, i) => data.writeBigUInt64LE(BigInt(arg), 16 + i * 8));
  return data;
}

/** The subset of classic BPF the filter uses: ld [k], jeq/jge/jset #k, ret #k. Anything else fails the test. */
function runBpf(program: readonly BpfInstruction[], data: Buffer): number {
  let acc = 0;
  for (let pc = 0; pc < program.length;) {
    const { code, jt, jf, k } = program[pc]!;
    switch (code) {
      case 0x20:
        acc = data.readUInt32LE(k);
        pc += 1;
        break;
      case 0x15:
        pc += 1 + (acc === k >>> 0 ? jt : jf);
        break;
      case 0x35:
        pc += 1 + (acc >>> 0 >= k >>> 0 ? jt : jf);
        break;
      case 0x45:
        pc += 1 + ((acc & k) >>> 0 !== 0 ? jt : jf);
        break;
      case 0x54:
        acc = (acc & k) >>> 0;
        pc += 1;
        break;
      case 0x06:
        return k >>> 0;
      default:
        throw new Error(`unexpected BPF code ${code}`);
    }
  }
  throw new Error('the program ran off its end');
}

const errno = (n: number) => (SECCOMP_RET_ERRNO | n) >>> 0;

describe('the seccomp filter for x86_64', () => {
  const program = toSeccompProgram('x64');
  const x64 = (nr: number, args: number[] = []) => runBpf(program, seccompData(AUDIT_ARCH_X86_64, nr, args));

  it('refuses socket(AF_UNIX) with EAFNOSUPPORT; allows socketpair(AF_UNIX), an unnamed pair (Node and asyncio need it)', () => {
    expect(x64(41, [1, 1, 0])).toBe(errno(97));
    expect(x64(53, [1, 1, 0])).toBe(SECCOMP_RET_ALLOW);
    expect(x64(53, [2 ** 32 + 1, 1, 0])).toBe(SECCOMP_RET_ALLOW); // the kernel reads the int: AF_UNIX
    expect(x64(53, [2, 1, 0])).toBe(errno(97));
  });

  it('allows only AF_INET, AF_INET6 and AF_NETLINK sockets, by the low word of the domain as the kernel reads it', () => {
    expect(x64(41, [2, 1, 0])).toBe(SECCOMP_RET_ALLOW);
    expect(x64(41, [10, 1, 0])).toBe(SECCOMP_RET_ALLOW);
    expect(x64(41, [16, 3, 0])).toBe(SECCOMP_RET_ALLOW);
    // The kernel reads the domain as an int: the high word does not make a unix socket.
    expect(x64(41, [2 ** 32 + 2, 1, 0])).toBe(SECCOMP_RET_ALLOW);
    expect(x64(41, [2 ** 32 + 1, 1, 0])).toBe(errno(97));
  });

  it('review round 2: netlink of NETLINK_ROUTE only (no uevents of the host), inet of stream or datagram TCP, UDP, ICMP only', () => {
    expect(x64(41, [16, 3, 15])).toBe(errno(93)); // NETLINK_KOBJECT_UEVENT
    expect(x64(41, [16, 3, 16])).toBe(errno(93)); // NETLINK_GENERIC
    expect(x64(41, [2, 1 | 0x800 | 0x80000, 0])).toBe(SECCOMP_RET_ALLOW); // SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC
    expect(x64(41, [2, 2, 17])).toBe(SECCOMP_RET_ALLOW); // UDP
    expect(x64(41, [10, 2, 58])).toBe(SECCOMP_RET_ALLOW); // ICMPv6 (ping)
    expect(x64(41, [2, 1, 132])).toBe(errno(93)); // SCTP: a module loaded on demand
    expect(x64(41, [2, 6, 33])).toBe(errno(93)); // DCCP
    expect(x64(41, [2, 5, 0])).toBe(errno(93)); // SOCK_SEQPACKET (SCTP's, by default)
    expect(x64(41, [2, 3, 1])).toBe(errno(93)); // SOCK_RAW
  });

  it('review round 2: refuses Linux AIO (host-wide event count) with ENOSYS', () => {
    for (const nr of [206, 207, 208, 209, 210, 333]) expect(x64(nr), `syscall ${nr}`).toBe(errno(38));
  });

  it('review F1: refuses every other family: AF_VSOCK (the hypervisor), AF_PACKET, AF_TIPC, AF_ALG, AF_BLUETOOTH', () => {
    for (const family of [40, 17, 30, 38, 31, 0, 3, 4, 5, 44, 45, 255]) {
      expect(x64(41, [family, 1, 0]), `family ${family}`).toBe(errno(97));
      expect(x64(53, [family, 1, 0]), `socketpair family ${family}`).toBe(errno(97));
    }
  });

  it('review F2: refuses new namespaces: clone or unshare with any CLONE_NEW* flag, setns, and clone3 (ENOSYS, glibc falls back)', () => {
    const CLONE_NEW = [0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];
    for (const flag of CLONE_NEW) {
      expect(x64(56, [flag | 17])).toBe(errno(1)); // clone(flags | SIGCHLD)
      expect(x64(272, [flag])).toBe(errno(1)); // unshare
    }
    expect(x64(272, [0x80])).toBe(errno(1)); // unshare(CLONE_NEWTIME)
    expect(x64(308, [3, 0])).toBe(errno(1)); // setns
    expect(x64(435, [0, 88])).toBe(errno(38)); // clone3
    // fork and threads are clone without CLONE_NEW*: allowed (0x3d0f00: glibc's pthread flags; SIGCHLD: fork).
    expect(x64(56, [17])).toBe(SECCOMP_RET_ALLOW);
    expect(x64(56, [0x3d0f00])).toBe(SECCOMP_RET_ALLOW);
    expect(x64(272, [0x400])).toBe(SECCOMP_RET_ALLOW); // unshare(CLONE_FILES)
  });

  it('refuses the kernel keyrings, bpf, perf_event_open and userfaultfd with EPERM', () => {
    for (const nr of [248, 249, 250, 321, 298, 323]) expect(x64(nr), `syscall ${nr}`).toBe(errno(1));
  });

  it('refuses io_uring_setup, io_uring_enter and io_uring_register with ENOSYS (IORING_OP_SOCKET bypasses socket())', () => {
    for (const nr of [425, 426, 427]) expect(x64(nr)).toBe(errno(38));
  });

  it('allows everything else: read, connect, execve, wait4, mount (which needs capabilities the step has not)', () => {
    for (const nr of [0, 42, 59, 61, 165]) expect(x64(nr)).toBe(SECCOMP_RET_ALLOW);
  });

  it('refuses the x32 ABI (syscall bit 0x40000000) and any other architecture, i386 included', () => {
    expect(x64(0x40000000 + 41, [1])).toBe(errno(1));
    expect(x64(0x40000000 + 0)).toBe(errno(1));
    expect(runBpf(program, seccompData(AUDIT_ARCH_I386, 359, [1]))).toBe(errno(1));
    expect(runBpf(program, seccompData(AUDIT_ARCH_AARCH64, 198, [1]))).toBe(errno(1));
  });
});

describe('the seccomp filter for aarch64', () => {
  const program = toSeccompProgram('arm64');
  const arm = (nr: number, args: number[] = []) => runBpf(program, seccompData(AUDIT_ARCH_AARCH64, nr, args));

  it('refuses unix sockets and io_uring by the generic syscall numbers, allows the rest', () => {
    expect(arm(198, [1])).toBe(errno(97));
    expect(arm(199, [1])).toBe(SECCOMP_RET_ALLOW);
    expect(arm(199, [40])).toBe(errno(97));
    expect(arm(198, [2, 1, 0])).toBe(SECCOMP_RET_ALLOW);
    expect(arm(0)).toBe(errno(38)); // io_setup
    expect(arm(198, [40])).toBe(errno(97)); // AF_VSOCK
    expect(arm(220, [0x10000000 | 17])).toBe(errno(1)); // clone(CLONE_NEWUSER)
    expect(arm(97, [0x10000000])).toBe(errno(1)); // unshare(CLONE_NEWUSER)
    expect(arm(268)).toBe(errno(1)); // setns
    expect(arm(435)).toBe(errno(38)); // clone3
    expect(arm(219)).toBe(errno(1)); // keyctl
    expect(arm(425)).toBe(errno(38));
    expect(arm(203)).toBe(SECCOMP_RET_ALLOW); // connect
    expect(runBpf(program, seccompData(AUDIT_ARCH_X86_64, 41, [1]))).toBe(errno(1));
  });
});

describe('toSeccompBytes', () => {
  it('encodes struct sock_filter as u16 code, u8 jt, u8 jf, u32 k, 8 bytes each, little-endian', () => {
    expect(toSeccompBytes([{ code: 0x15, jt: 2, jf: 7, k: 0xc000003e }]).toString('hex')).toBe('150002073e0000c0');
    expect(toSeccompBytes([{ code: 0x06, jt: 0, jf: 0, k: 0x7fff0000 }], false).toString('hex')).toBe('000600007fff0000');
  });

  it('gives the program bwrap reads for this host, and nothing for an architecture without a table', () => {
    const bytes = toSeccompFilterFor('x64')!;
    expect(bytes.length).toBe(toSeccompProgram('x64').length * 8);
    expect(bytes.subarray(0, 8).toString('hex')).toBe('2000000004000000'); // ld [4]: seccomp_data.arch
    expect(toSeccompFilterFor('ia32')).toBeUndefined();
  });
});
