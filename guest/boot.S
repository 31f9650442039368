/*
 * ORBIT test guest: multiboot (v1) header, the switch to 64-bit long mode, and
 * the drop to user mode (ring 3) where all of guest.c runs.
 *
 * The loader (QEMU -kernel, GRUB, ...) enters _start in 32-bit protected
 * mode, paging off, interrupts off, with EAX = 0x2BADB002 and EBX = physical
 * address of the multiboot information structure.
 *
 * Why ring 3 in long mode: some KVMs run a guest's supervisor code, or any
 * code with paging off, by emulating it instruction by instruction. PVM
 * (kvm_pvm, "Pagetable-based Virtual Machine", found in nested sandboxes)
 * does: measured with the kvm_emulate_insn tracepoint, the old 32-bit
 * paging-off guest had every instruction emulated (~1 us each, ~1 MiB/s of
 * page writes), while 64-bit user-mode code with paging on runs natively.
 * On ordinary KVM and on TCG, ring 3 costs nothing. Port I/O stays possible
 * from ring 3 through IOPL=3. The few things that need ring 0 (the TLB flush
 * for TCG, halting) go through SYSCALL; see guest_syscall() in guest.c.
 *
 * Memory map: identity-mapped 0..4 GiB with 2 MiB user pages; the image is
 * loaded at 1 MiB; the working set starts at 16 MiB.
 */

        .set MB_MAGIC,    0x1BADB002
        .set MB_FLAGS,    0x00000003            /* bit 0: page-align modules, bit 1: meminfo */
        .set MB_CHECKSUM, -(MB_MAGIC + MB_FLAGS)

        .set STACK_SIZE,  16384

        .set KERNEL_CS,   0x08
        .set KERNEL_DS,   0x10
        .set USER_BASE,   0x18                  /* SYSRET: SS = base+8, CS = base+16 */
        .set USER_DS,     0x20 | 3
        .set USER_CS,     0x28 | 3

        .set PTE_P_RW_US, 0x07                  /* present, writable, user */
        .set PDE_2M,      0x87                  /* present, writable, user, 2 MiB page */

        .set MSR_EFER,    0xC0000080
        .set MSR_STAR,    0xC0000081
        .set MSR_LSTAR,   0xC0000082
        .set MSR_SFMASK,  0xC0000084
        .set EFER_SCE_LME, 0x101                /* SYSCALL enable, long mode enable */
        .set RFLAGS_USER, 0x3002                /* IOPL=3, reserved bit 1; IF off */

        .set SYS_FLUSH_TLB, 0
        .set SYS_HALT,      1

/* Must be within the first 8 KiB of the file: link.ld puts it first. */
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long MB_CHECKSUM

/* Page tables, built at assembly time (nothing to compute while emulated):
 * PML4[0] -> PDPT, PDPT[0..3] -> four page directories of 512 x 2 MiB. */
        .section .data
        .align 4096
pml4:
        .quad pdpt + PTE_P_RW_US
        .fill 511, 8, 0
pdpt:
        .quad pd + 0 * 4096 + PTE_P_RW_US
        .quad pd + 1 * 4096 + PTE_P_RW_US
        .quad pd + 2 * 4096 + PTE_P_RW_US
        .quad pd + 3 * 4096 + PTE_P_RW_US
        .fill 508, 8, 0
pd:
        .set i, 0
        .rept 2048
        .quad (i << 21) | PDE_2M
        .set i, i + 1
        .endr

        .section .rodata
        .align 8
gdt:
        .quad 0x0000000000000000                /* null */
        .quad 0x00AF9A000000FFFF                /* 0x08: kernel code, 64-bit */
        .quad 0x00CF92000000FFFF                /* 0x10: kernel data */
        .quad 0x00CFFA000000FFFF                /* 0x18: user code, 32-bit (unused) */
        .quad 0x00CFF2000000FFFF                /* 0x20: user data */
        .quad 0x00AFFA000000FFFF                /* 0x28: user code, 64-bit */
gdt_end:
        .align 4
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt

        .section .bss
        .align 16
stack_bottom:
        .skip STACK_SIZE
stack_top:

        .section .text
        .code32
        .global _start
        .type _start, @function
_start:
        cli
        cld
        mov     %eax, %esi                      /* keep magic in ESI, info in EDI */
        mov     %ebx, %edi

        lgdt    gdt_desc
        mov     %cr4, %eax
        or      $0x20, %eax                     /* CR4.PAE */
        mov     %eax, %cr4
        mov     $pml4, %eax
        mov     %eax, %cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $EFER_SCE_LME, %eax
        wrmsr
        mov     %cr0, %eax
        or      $0x80000001, %eax               /* CR0.PG | CR0.PE */
        mov     %eax, %cr0
        ljmp    $KERNEL_CS, $long_mode
        .size _start, . - _start

        .code64
long_mode:
        mov     $KERNEL_DS, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %fs
        mov     %ax, %gs
        mov     %ax, %ss

        /* SYSCALL lands in syscall_entry (ring 0); SYSRET returns to ring 3. */
        mov     $MSR_STAR, %ecx
        xor     %eax, %eax
        mov     $((USER_BASE << 16) | KERNEL_CS), %edx
        wrmsr
        mov     $MSR_LSTAR, %ecx
        mov     $syscall_entry, %eax
        xor     %edx, %edx
        wrmsr
        mov     $MSR_SFMASK, %ecx
        xor     %eax, %eax                      /* keep RFLAGS (IF is off anyway) */
        wrmsr

        /* Drop to ring 3: IRETQ to user_entry with the user stack. */
        mov     $stack_top, %rsp
        pushq   $USER_DS
        pushq   $stack_top
        pushq   $RFLAGS_USER
        pushq   $USER_CS
        pushq   $user_entry
        iretq

user_entry:
        mov     $USER_DS, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %esi, %r12d                     /* magic */
        mov     %edi, %r13d                     /* info */

        /* Zero .bss (includes our stack, which is empty now), natively. */
        mov     $__bss_start, %edi
        mov     $__bss_end, %ecx
        sub     %edi, %ecx
        shr     $3, %ecx
        xor     %eax, %eax
        rep stosq

        mov     $stack_top, %rsp
        xor     %ebp, %ebp
        mov     %r12d, %edi
        mov     %r13d, %esi
        call    kmain
        mov     $SYS_HALT, %eax
        syscall

/* SYSCALL: RAX = SYS_FLUSH_TLB or SYS_HALT. Runs in ring 0 on the user's stack
 * (nothing is pushed); RCX and R11 hold the return RIP and RFLAGS. */
syscall_entry:
        cmp     $SYS_HALT, %eax
        je      1f
        mov     %cr4, %rax                      /* toggle CR4.PGE twice: a full */
        xor     $0x80, %rax                     /* TLB flush, also in QEMU's TCG */
        mov     %rax, %cr4
        xor     $0x80, %rax
        mov     %rax, %cr4
        sysretq
1:      cli
        hlt
        jmp     1b

        .section .note.GNU-stack, "", @progbits
