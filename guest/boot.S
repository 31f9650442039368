/*
 * ORBIT test guest: multiboot (v1) header and 32-bit entry point.
 *
 * The loader (QEMU -kernel, GRUB, ...) enters _start in 32-bit protected
 * mode, paging off, interrupts off, with EAX = 0x2BADB002 and EBX = physical
 * address of the multiboot information structure.
 */

        .set MB_MAGIC,    0x1BADB002
        .set MB_FLAGS,    0x00000003            /* bit 0: page-align modules, bit 1: meminfo */
        .set MB_CHECKSUM, -(MB_MAGIC + MB_FLAGS)

        .set STACK_SIZE,  16384

/* Must be within the first 8 KiB of the file: link.ld puts it first. */
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long MB_CHECKSUM

/* A flat GDT of our own, so nothing depends on the loader's (possibly
 * transient) descriptor tables. */
        .section .rodata
        .align 8
gdt:
        .quad 0x0000000000000000                /* null */
        .quad 0x00CF9A000000FFFF                /* 0x08: code, base 0, 4 GiB, 32-bit */
        .quad 0x00CF92000000FFFF                /* 0x10: data, base 0, 4 GiB, 32-bit */
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
        .global _start
        .type _start, @function
_start:
        cli
        cld
        mov     %eax, %edx                      /* keep magic in EDX, info in EBX */

        lgdt    gdt_desc
        ljmp    $0x08, $1f
1:      mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %fs
        mov     %ax, %gs
        mov     %ax, %ss

        /* Zero .bss (includes our stack). The multiboot info structure and
         * the command line are placed by the loader after the image. */
        mov     $__bss_start, %edi
        mov     $__bss_end, %ecx
        sub     %edi, %ecx
        shr     $2, %ecx
        xor     %eax, %eax
        rep stosl

        mov     $stack_top, %esp
        xor     %ebp, %ebp
        sub     $8, %esp                        /* keep ESP 16-byte aligned at the call */
        push    %ebx                            /* info_addr */
        push    %edx                            /* magic */
        call    kmain

2:      cli
        hlt
        jmp     2b
        .size _start, . - _start

        .section .note.GNU-stack, "", @progbits
