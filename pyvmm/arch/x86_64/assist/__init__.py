"""The emulation assist layer: instructions pyvmm performs when KVM's emulator gives up.

A CPU with VT-x or AMD-V runs the guest's kernel (CPL 0) code itself and
traps to KVM only on the few instructions a VMM must see. A host without them
runs CPL 0 code through KVM's instruction emulator instead (trap-and-emulate
of the whole kernel: a software backend such as kvm_pvm), and that emulator
does not know every instruction: it exits with KVM_EXIT_INTERNAL_ERROR,
suberror KVM_INTERNAL_ERROR_EMULATION, and the instruction's bytes. QEMU and
kvmtool stop the guest there ("emulation failure"). pyvmm looks the
instruction up in a short table (table.py) and, when it is there, performs
it itself and resumes the guest; anything else still ends the run as the
internal-error outcome that names it.

- operands.py: decoding (capstone) into operands, and the effective-address
  calculator (ModRM/SIB/displacement, RIP-relative, segment bases);
- state.py: the CPU state an entry reads and the state it returns (pure);
- table.py: the table; each entry a pure function of (state, memory) -> result;
- vcpu.py: the glue to a vCPU (registers in, registers and events out, memory
  operands through the guest's page tables).

Nothing here is imported before the first emulation failure.
"""
