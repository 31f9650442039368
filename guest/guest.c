/*
 * ORBIT test guest: a tiny freestanding x86 kernel for live-migration tests.
 *
 * It dirties a working set of memory at a chosen rate, verifies every page
 * before rewriting it, and prints a heartbeat line to COM1 every 100 ms.
 * See README.md for the command line and the output format.
 *
 * It runs in 64-bit user mode (ring 3) on identity-mapped memory; boot.S says
 * why and gets it there. Memory model: the working set is npages 4 KiB pages
 * starting at physical 16 MiB (linear == physical). gen[p] is the generation
 * last written to page p (0 = never written). Word i of page p written with
 * generation g holds pattern_word(p, i, g); a page whose content does not
 * match its recorded generation counts as one verification error.
 *
 * Cold memory (cold_mib) is cold_pages more pages right after the working
 * set, filled once at boot with generation 1 and never rewritten: RAM that
 * costs bytes to migrate (a page never written is a zero page, which
 * migration sends for free) but that does not get dirty again. The
 * heartbeat re-reads a slice of it each time, so a migration that loses it
 * is still caught.
 *
 * No libc and no libgcc.
 */
#include <stdint.h>

#define WSS_BASE        0x01000000u             /* working set starts at 16 MiB */
#define PAGE_SIZE       4096u
#define WORDS_PER_PAGE  (PAGE_SIZE / 4u)
#define PAGES_PER_MIB   256u
#define MAX_WSS_MIB     3072u
#define MAX_PAGES       (MAX_WSS_MIB * PAGES_PER_MIB)  /* 786432 */
#define MAX_RATE_MIB_S  1000000u
#define MAX_QUIET_S     3600u
#define QUIET_RATE_MIB_S 1u                     /* dirty rate while quiet_s lasts */
#define COLD_CHECK_PAGES 256u                   /* cold pages verified per heartbeat */
#define HB_INTERVAL_MS  100u                    /* heartbeat period */
#define MAX_DEFICIT_MS  100u                    /* max catch-up after a stall */
#define PIT_HZ          1193182u
#define CAL_MS          50u                     /* TSC calibration window */

#define MB_BOOT_MAGIC     0x2BADB002u
#define MBI_FLAG_MEM      (1u << 0)
#define MBI_FLAG_CMDLINE  (1u << 2)

#define COM1            0x3F8

enum pattern { PATTERN_SEQ, PATTERN_RANDOM };

/* The part of the multiboot information structure we use. */
struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;                         /* KiB below 640 KiB */
    uint32_t mem_upper;                         /* KiB above 1 MiB */
    uint32_t boot_device;
    uint32_t cmdline;                           /* physical address of C string */
};

/* ---------------------------------------------------------------------- */
/* Configuration (from the command line) and state                        */

static struct {
    uint32_t wss_mib;
    uint32_t rate_mib_s;                        /* 0 = unpaced */
    uint32_t corrupt;                           /* test-only fault injection */
    enum pattern pattern;
    uint32_t tlbflush;                          /* flush the TLB around writes (TCG) */
    uint32_t cold_mib;                          /* filled once, never rewritten */
    uint32_t quiet_s;                           /* seconds at QUIET_RATE_MIB_S first */
    uint32_t prefill;                           /* write the working set once at boot */
} cfg = { 64, 0, 0, PATTERN_SEQ, 0, 0, 0, 0 };

static uint32_t gen[MAX_PAGES];                 /* per-page generation, in .bss */
static char cmdline[1024];

static uint32_t npages;                         /* pages in the working set */
static uint32_t cold_pages;                     /* pages npages.. are cold memory */
static uint32_t mem_mib;                        /* RAM below the first hole */
static uint32_t tsc_khz;
static uint64_t tsc_hz;

static uint64_t pages_written;                  /* total page writes */
static uint32_t errors;                         /* pages that failed verification */
static uint32_t seq_pos, seq_passes;            /* sequential pattern cursor */
static uint32_t rng_state = 2463534242u;        /* xorshift32 state (non-zero) */
static int corrupted, force_page0;
static uint32_t cold_pos;                       /* next cold page to verify, 0-based */
static uint64_t cold_checked;                   /* cold page verifications so far */

/* ---------------------------------------------------------------------- */
/* CPU and port helpers                                                   */

static inline void outb(uint16_t port, uint8_t val)
{
    __asm__ volatile("outb %0, %1" : : "a"(val), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t val;
    __asm__ volatile("inb %1, %0" : "=a"(val) : "Nd"(port));
    return val;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_pause(void)
{
    __asm__ volatile("pause");
}

/* The two services of ring 0 (boot.S, syscall_entry). */
#define SYS_FLUSH_TLB   0
#define SYS_HALT        1

static inline void guest_syscall(uint64_t nr)
{
    __asm__ volatile("syscall" : "+a"(nr) : : "rcx", "r11", "memory");
}

static void __attribute__((noreturn)) halt_forever(void)
{
    for (;;)
        guest_syscall(SYS_HALT);
}

/* ---------------------------------------------------------------------- */
/* Serial console (COM1, 115200 8N1, polled)                              */

static void serial_init(void)
{
    outb(COM1 + 1, 0x00);                       /* no interrupts */
    outb(COM1 + 3, 0x80);                       /* DLAB on */
    outb(COM1 + 0, 0x01);                       /* divisor 1 = 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);                       /* 8N1, DLAB off */
    outb(COM1 + 2, 0xC7);                       /* FIFO on, cleared */
    outb(COM1 + 4, 0x03);                       /* DTR, RTS */
}

static void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))             /* LSR: THR empty */
        cpu_pause();
    outb(COM1, (uint8_t)c);
}

static void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void put_u64(uint64_t v)
{
    char buf[21];
    int n = 0;
    uint32_t digit;

    do {
        digit = (uint32_t)(v % 10);
        v /= 10;
        buf[n++] = (char)('0' + digit);
    } while (v);
    while (n)
        putc(buf[--n]);
}

static void put_hex(uint32_t v)
{
    puts("0x");
    for (int shift = 28; shift >= 0; shift -= 4)
        putc("0123456789abcdef"[(v >> shift) & 0xF]);
}

/* " key=value" */
static void put_kv(const char *key, uint64_t val)
{
    putc(' ');
    puts(key);
    putc('=');
    put_u64(val);
}

static void __attribute__((noreturn)) fatal(const char *msg)
{
    puts("ORBIT-GUEST error: ");
    puts(msg);
    putc('\n');
    halt_forever();
}

/* ---------------------------------------------------------------------- */
/* Command line                                                           */

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* Strict unsigned decimal; returns 0 on empty input, junk or overflow. */
static int parse_u32(const char *s, uint32_t *out)
{
    uint32_t v = 0;

    if (!*s)
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        if (v > (0xFFFFFFFFu - (uint32_t)(*s - '0')) / 10)
            return 0;
        v = v * 10 + (uint32_t)(*s - '0');
    }
    *out = v;
    return 1;
}

static void __attribute__((noreturn)) bad_value(const char *key, const char *val,
                                                const char *expected)
{
    puts("ORBIT-GUEST error: bad value ");
    puts(key);
    putc('=');
    puts(val);
    puts(" (expected ");
    puts(expected);
    puts(")\n");
    halt_forever();
}

static void apply_option(const char *key, const char *val)
{
    uint32_t v;

    if (streq(key, "wss_mib")) {
        if (!parse_u32(val, &v) || v < 1 || v > MAX_WSS_MIB)
            bad_value(key, val, "1..3072");
        cfg.wss_mib = v;
    } else if (streq(key, "rate_mib_s")) {
        if (!parse_u32(val, &v) || v > MAX_RATE_MIB_S)
            bad_value(key, val, "0..1000000");
        cfg.rate_mib_s = v;
    } else if (streq(key, "pattern")) {
        if (streq(val, "seq"))
            cfg.pattern = PATTERN_SEQ;
        else if (streq(val, "random"))
            cfg.pattern = PATTERN_RANDOM;
        else
            bad_value(key, val, "seq|random");
    } else if (streq(key, "corrupt")) {
        if (!parse_u32(val, &v) || v > 1)
            bad_value(key, val, "0|1");
        cfg.corrupt = v;
    } else if (streq(key, "tlbflush")) {
        if (!parse_u32(val, &v) || v > 1)
            bad_value(key, val, "0|1");
        cfg.tlbflush = v;
    } else if (streq(key, "cold_mib")) {
        if (!parse_u32(val, &v) || v > MAX_WSS_MIB)
            bad_value(key, val, "0..3072");
        cfg.cold_mib = v;
    } else if (streq(key, "prefill")) {
        if (!parse_u32(val, &v) || v > 1)
            bad_value(key, val, "0|1");
        cfg.prefill = v;
    } else if (streq(key, "quiet_s")) {
        if (!parse_u32(val, &v) || v > MAX_QUIET_S)
            bad_value(key, val, "0..3600");
        cfg.quiet_s = v;
    } else {
        puts("ORBIT-GUEST warning: ignoring unknown key ");
        puts(key);
        putc('\n');
    }
}

/* Split the (already copied) command line on blanks; handle key=value
 * tokens and skip everything else (e.g. the kernel path QEMU prepends). */
static void parse_cmdline(char *s)
{
    while (*s) {
        char *tok, *eq = 0;

        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        tok = s;
        while (*s && *s != ' ' && *s != '\t') {
            if (*s == '=' && !eq)
                eq = s;
            s++;
        }
        if (*s)
            *s++ = '\0';
        if (!eq)
            continue;
        *eq = '\0';
        apply_option(tok, eq + 1);
    }
}

/* ---------------------------------------------------------------------- */
/* TSC calibration against PIT channel 2                                  */

static uint32_t calibrate_tsc_khz(void)
{
    const uint32_t latch = PIT_HZ * CAL_MS / 1000u;  /* PIT ticks in CAL_MS */
    uint8_t saved = inb(0x61);
    uint32_t spins = 0;
    uint64_t t0, t1;

    outb(0x61, (uint8_t)((saved & ~0x02) | 0x01)); /* gate 2 on, speaker off */
    outb(0x43, 0xB0);                           /* ch 2, lo/hi byte, mode 0 */
    outb(0x42, (uint8_t)(latch & 0xFF));
    outb(0x42, (uint8_t)(latch >> 8));          /* counting starts now */
    t0 = rdtsc();
    while (!(inb(0x61) & 0x20))                 /* OUT2 goes high at 0 */
        if (++spins > 200000000u)
            return 0;
    t1 = rdtsc();
    outb(0x61, saved);

    /* tsc_khz = ticks / (latch / PIT_HZ seconds) / 1000 */
    return (uint32_t)((t1 - t0) * PIT_HZ / (latch * 1000u));
}

static uint64_t ticks_to_ms(uint64_t ticks)
{
    return ticks / tsc_khz;
}

/* ---------------------------------------------------------------------- */
/* Working set: pattern, verification, page selection                     */

static inline uint32_t *page_ptr(uint32_t p)
{
    return (uint32_t *)(uintptr_t)(WSS_BASE + p * PAGE_SIZE);
}

/* Word i of page p at generation g is (p*1024+i) ^ (g*0x9E3779B9) ^ 0x5A5A5A5A:
 * unique per page and word, and different for every generation. */
static inline uint32_t gen_mix(uint32_t g)
{
    return (g * 0x9E3779B9u) ^ 0x5A5A5A5Au;
}

static int page_ok(uint32_t p, uint32_t g)
{
    const uint32_t *w = page_ptr(p);
    uint32_t base = p * WORDS_PER_PAGE, mix = gen_mix(g);

    for (uint32_t i = 0; i < WORDS_PER_PAGE; i++)
        if (w[i] != ((base + i) ^ mix))
            return 0;
    return 1;
}

static void page_fill(uint32_t p, uint32_t g)
{
    uint32_t *w = page_ptr(p);
    uint32_t base = p * WORDS_PER_PAGE, mix = gen_mix(g);

    for (uint32_t i = 0; i < WORDS_PER_PAGE; i++)
        w[i] = (base + i) ^ mix;
}

/* tlbflush=1, for QEMU's TCG emulator: toggling CR4.PGE (in ring 0, through
 * SYSCALL) makes QEMU flush its software TLB. TCG tracks dirty pages
 * for migration by trapping the first write through each TLB entry; after a
 * dirty-bitmap sync (one per pre-copy iteration) it does not re-arm entries
 * that are already cached (QEMU 7.2), so writes through them go unrecorded and
 * the destination gets a stale page. Flushing right before each write of a
 * page and of its generation keeps every write recorded except in a window of
 * one instruction. KVM tracks dirty pages in hardware and needs none of this. */
static inline void tlb_flush(void)
{
    if (cfg.tlbflush)
        guest_syscall(SYS_FLUSH_TLB);
}

/* Verify page p against its recorded generation, then rewrite it with the
 * next generation. */
static void touch_page(uint32_t p)
{
    uint32_t g = gen[p];

    if (g != 0 && !page_ok(p, g))
        errors++;
    if (++g == 0)                               /* 0 means "never written" */
        g = 1;
    tlb_flush();
    page_fill(p, g);
    tlb_flush();
    gen[p] = g;
    pages_written++;
}

static uint32_t xorshift32(void)
{
    uint32_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* Dirty one page according to the pattern (plus optional fault injection). */
static void dirty_one_page(void)
{
    uint32_t p;

    if (cfg.pattern == PATTERN_SEQ) {
        touch_page(seq_pos);
        if (++seq_pos == npages) {
            seq_pos = 0;
            seq_passes++;
        }
    } else {
        if (force_page0) {
            force_page0 = 0;
            p = 0;
        } else {
            p = (uint32_t)(((uint64_t)xorshift32() * npages) >> 32);
        }
        touch_page(p);
    }

    /* corrupt=1: once page 0 holds verified data and a full pass worth of
     * writes happened, flip one word behind the bookkeeping's back. The next
     * visit of page 0 must then count an error. */
    if (cfg.corrupt && !corrupted && gen[0] != 0 &&
        (cfg.pattern == PATTERN_SEQ ? seq_passes >= 1 : pages_written >= npages)) {
        volatile uint32_t *w = page_ptr(0);
        *w ^= 0xFFFFFFFFu;
        corrupted = 1;
        force_page0 = 1;                        /* seq reaches page 0 next anyway */
    }
}

/* ---------------------------------------------------------------------- */
/* Cold memory: filled once, then only read                               */

/* At boot, before the main loop and so before any migration can start:
 * no TLB flush is needed (tlbflush=1 guards writes during a migration). */
static void cold_fill(void)
{
    /* prefill=1: the working set too holds data from the start (generation
     * 1), as a VM that has run for a while does; otherwise a page is a zero
     * page, free to migrate, until the guest first writes it. */
    if (cfg.prefill) {
        for (uint32_t p = 0; p < npages; p++) {
            page_fill(p, 1);
            gen[p] = 1;
        }
    }
    for (uint32_t p = npages; p < npages + cold_pages; p++) {
        page_fill(p, 1);
        gen[p] = 1;
    }

    /* corrupt=1: also flip one word of the first cold page behind the
     * bookkeeping's back, so that the first cold check counts an error
     * long before the working set's own fault shows up. */
    if (cfg.corrupt && cold_pages) {
        volatile uint32_t *w = page_ptr(npages);
        *w ^= 0xFFFFFFFFu;
    }
}

/* Verify the next COLD_CHECK_PAGES cold pages, cycling. Only reads, so it
 * dirties nothing and needs no TLB flush. A bad page counts one error and
 * gets generation 0 ("not checked"): it is never rewritten, so it would
 * otherwise count again on every cycle. */
static void cold_check_slice(void)
{
    for (uint32_t n = 0; n < COLD_CHECK_PAGES && n < cold_pages; n++) {
        uint32_t p = npages + cold_pos;

        if (gen[p] != 0 && !page_ok(p, gen[p])) {
            errors++;
            gen[p] = 0;
        }
        cold_checked++;
        if (++cold_pos == cold_pages)
            cold_pos = 0;
    }
}

/* ---------------------------------------------------------------------- */
/* Main loop: pacing and heartbeats                                       */

static uint64_t start_tsc, hb_last_tsc, hb_next_tsc, hb_ticks;
static uint64_t hb_last_pages, max_gap_ticks;
static uint32_t hb_seq;

static void heartbeat(uint64_t now)
{
    tlb_flush();                                /* keep hb_seq's update recorded */
    uint64_t gap = now - hb_last_tsc;
    uint64_t delta_kib = (pages_written - hb_last_pages) * (PAGE_SIZE / 1024u);
    uint64_t passes = cfg.pattern == PATTERN_SEQ
        ? seq_passes : pages_written / npages;

    if (gap > max_gap_ticks)
        max_gap_ticks = gap;
    cold_check_slice();
    hb_seq++;
    puts("HB");
    put_kv("seq", hb_seq);
    put_kv("ms", ticks_to_ms(now - start_tsc));
    put_kv("pages", pages_written);
    put_kv("passes", passes);
    put_kv("errors", errors);
    put_kv("rate_kib_s", gap ? delta_kib * tsc_hz / gap : 0);
    put_kv("max_gap_ms", ticks_to_ms(max_gap_ticks));
    put_kv("cold_checked", cold_checked);
    putc('\n');

    hb_last_tsc = now;
    hb_last_pages = pages_written;
    /* Stay on the 100 ms grid; after a stall, restart the grid from now
     * instead of emitting a burst of heartbeats. */
    hb_next_tsc += hb_ticks;
    if (hb_next_tsc <= now)
        hb_next_tsc = now + hb_ticks;
}

/* Dirty pages at rate_mib_s (0 = as fast as possible) until the TSC reaches
 * until (UINT64_MAX = forever), printing heartbeats as they fall due.
 *
 * Pacing: page k after (base_tsc, base_pages) is due at
 * base_tsc + k * tsc_hz / pps. The base advances by exactly one second
 * per pps pages (no drift); it is only moved otherwise after a stall,
 * so that the backlog never exceeds MAX_DEFICIT_MS worth of pages. Each
 * call starts a new schedule from now, so a change of rate brings no
 * burst of catch-up writes. */
static void run_paced(uint32_t rate_mib_s, uint64_t until)
{
    const uint32_t pps = rate_mib_s * PAGES_PER_MIB;
    const uint64_t max_deficit = (uint64_t)tsc_khz * MAX_DEFICIT_MS;
    uint64_t base_tsc, base_pages = pages_written, due;

    base_tsc = due = rdtsc();

    for (;;) {
        uint64_t now = rdtsc();

        if (now >= until)
            return;
        if (now >= hb_next_tsc)
            heartbeat(now);

        if (pps == 0) {                         /* unpaced: as fast as possible */
            dirty_one_page();
            continue;
        }
        if (now < due) {                        /* ahead of budget: wait */
            cpu_pause();
            continue;
        }
        if (now - due > max_deficit) {          /* stalled: forgive the backlog */
            base_tsc = now - max_deficit;
            base_pages = pages_written;
        }
        dirty_one_page();

        uint64_t k = pages_written - base_pages;
        if (k >= pps) {
            base_tsc += tsc_hz;
            base_pages += pps;
            k -= pps;
        }
        due = base_tsc + k * tsc_hz / pps;
    }
}

static void __attribute__((noreturn)) run(void)
{
    start_tsc = hb_last_tsc = rdtsc();
    hb_ticks = (uint64_t)tsc_khz * HB_INTERVAL_MS;
    hb_next_tsc = start_tsc + hb_ticks;

    /* quiet_s: a slow start, e.g. so that a migration can begin while the
     * guest dirties little and meet the full rate part way through. */
    if (cfg.quiet_s)
        run_paced(QUIET_RATE_MIB_S, start_tsc + cfg.quiet_s * tsc_hz);
    run_paced(cfg.rate_mib_s, UINT64_MAX);
    halt_forever();                             /* not reached */
}

/* ---------------------------------------------------------------------- */
/* Entry from boot.S                                                      */

void kmain(uint32_t magic, uint32_t info_addr);

void kmain(uint32_t magic, uint32_t info_addr)
{
    const struct multiboot_info *mbi =
        (const struct multiboot_info *)(uintptr_t)info_addr;

    serial_init();
    if (magic != MB_BOOT_MAGIC) {
        puts("ORBIT-GUEST error: not started by a multiboot loader, magic=");
        put_hex(magic);
        putc('\n');
        halt_forever();
    }

    /* Copy the command line first: it lives in loader-provided memory. */
    if (mbi->flags & MBI_FLAG_CMDLINE) {
        const char *src = (const char *)(uintptr_t)mbi->cmdline;
        uint32_t n = 0;

        while (src[n] && n < sizeof(cmdline) - 1) {
            cmdline[n] = src[n];
            n++;
        }
        cmdline[n] = '\0';
    }
    puts("ORBIT-GUEST cmdline: ");
    puts(cmdline);
    putc('\n');
    parse_cmdline(cmdline);

    if (!(mbi->flags & MBI_FLAG_MEM))
        fatal("loader did not report memory size (multiboot flags bit 0)");
    /* RAM size in MiB, rounded to nearest: the BIOS keeps a few KiB at the
     * top of RAM, so -m 256 reports mem_upper = 255 MiB - 128 KiB. */
    mem_mib = (mbi->mem_upper + 1024u + 512u) / 1024u;

    /* Working set and cold memory, [16 MiB, 16 MiB + wss + cold), must lie
     * below the end of RAM, and their pages must fit in gen[]. */
    if (cfg.wss_mib + cfg.cold_mib > MAX_WSS_MIB)
        fatal("wss_mib + cold_mib must be at most 3072");
    if ((WSS_BASE / 1024u) + (cfg.wss_mib + cfg.cold_mib) * 1024u > 1024u + mbi->mem_upper) {
        puts("ORBIT-GUEST error: wss_mib=");
        put_u64(cfg.wss_mib);
        if (cfg.cold_mib) {
            puts(" cold_mib=");
            put_u64(cfg.cold_mib);
        }
        puts(" does not fit in ");
        put_u64(mem_mib);
        puts(" MiB of RAM\n");
        puts("ORBIT-GUEST note: the working set starts at 16 MiB; usable RAM ends at ");
        put_u64(1024u + mbi->mem_upper);
        puts(cfg.cold_mib ? " KiB, so wss_mib + cold_mib <= " : " KiB, so wss_mib <= ");
        put_u64((1024u + mbi->mem_upper) / 1024u > 16u ? (1024u + mbi->mem_upper) / 1024u - 16u : 0);
        puts(" here\n");
        halt_forever();
    }
    npages = cfg.wss_mib * PAGES_PER_MIB;
    cold_pages = cfg.cold_mib * PAGES_PER_MIB;

    tsc_khz = calibrate_tsc_khz();
    if (tsc_khz == 0)
        fatal("TSC calibration against the PIT failed");
    tsc_hz = (uint64_t)tsc_khz * 1000u;

    /* Before the start line, so that the main loop still starts just after
     * it (the fill takes ~0.1 s per GiB under KVM, longer under TCG). */
    cold_fill();

    puts("ORBIT-GUEST start");
    put_kv("wss_mib", cfg.wss_mib);
    put_kv("rate_mib_s", cfg.rate_mib_s);
    puts(cfg.pattern == PATTERN_SEQ ? " pattern=seq" : " pattern=random");
    put_kv("corrupt", cfg.corrupt);
    put_kv("tlbflush", cfg.tlbflush);
    put_kv("cold_mib", cfg.cold_mib);
    put_kv("quiet_s", cfg.quiet_s);
    put_kv("prefill", cfg.prefill);
    put_kv("mem_mib", mem_mib);
    put_kv("tsc_khz", tsc_khz);
    putc('\n');

    run();
}
