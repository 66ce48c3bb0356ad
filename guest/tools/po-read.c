// SPDX-License-Identifier: GPL-2.0
/*
 * po-read: read one PFN range of /sys/kernel/debug/page_owner.
 *
 *   po-read [-f FILE] [-m MODE [-s STACKS]] START [END]
 *
 * Writes the records whose PFN is in [START, END) to stdout, byte for byte as the kernel formats
 * them, in PFN order. START 0 reads from the beginning exactly like `cat`; without END it reads to
 * the end. pagelab runs one po-read per PFN range, several at once on an SMP guest, and
 * concatenates the ranges in order: the result is what a single `cat` would have produced.
 *
 * Why a program at all: the file offset of page_owner is a PFN (lseek(fd, pfn, SEEK_SET) starts
 * there), each read() returns exactly one record, and a buffer smaller than a record fails with
 * ENOMEM. The kernel cannot be told where to stop, so po-read parses the "PFN" line of each record
 * (decimal up to 6.6, 0x-hex from 6.7) and stops at the first record at or past END.
 *
 * -m MODE asks the kernel for another record format before reading: 7.x's page_owner is writable per
 * open file (mm/page_owner.c, page_owner_write: "mode=stack|handle|stack_handle"). In handle mode a
 * record carries "handle: N" instead of its stack, which the kernel formats much faster; pagelab puts
 * the stacks back from page_owner_stacks/show_stacks_handles. A kernel without the write (6.x) makes
 * po-read exit 3, which is how pagelab detects the feature.
 *
 * Not every handle is in show_stacks_handles: the kernel lists a stack only when it could allocate
 * its list entry (mm/page_owner.c, add_stack_record_to_list: never for the early-boot stack, nor for
 * stacks first seen before the slab allocator or from a context that may not spin). With -s STACKS (a
 * copy of show_stacks_handles) po-read re-reads the first record of each unlisted handle through a
 * second file in mode=stack_handle, at the same PFN, and prints that instead: frames, then the handle.
 * The host learns the stack from it; later records of the handle stay short.
 *
 * Built statically on the host (gcc -static -O2) and shipped in the guest image; exit status 0 on
 * success, 1 on an I/O error, 2 on bad usage, 3 when the kernel refuses MODE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#define DEFAULT_FILE "/sys/kernel/debug/page_owner"
#define DEBUGFS_MAGIC 0x64626720 /* include/uapi/linux/magic.h */

static char *buf;
static int resolve_fd = -1;  /* page_owner opened in stack_handle mode (-s) */
static unsigned int *listed; /* sorted handles of show_stacks_handles (-s) */
static size_t n_listed;
static unsigned int *learned; /* unlisted handles whose stack this process has printed */
static size_t n_learned, cap_learned;
static char *one;             /* one record re-read in stack_handle mode */
static size_t one_size = 64 * 1024;
static size_t buf_size = 64 * 1024;
static size_t buf_len; /* bytes held: a partial record when FILE is a regular file */

static void usage(void)
{
	fprintf(stderr, "usage: po-read [-f FILE] [-m stack|handle|stack_handle [-s STACKS]] START [END]\n");
	exit(2);
}

static int parse_pfn(const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || end == s || *end != '\0' ? -1 : 0;
}

/* The PFN of one record: its second line starts with "PFN ". Returns -1 when there is none. */
static int record_pfn(const char *rec, size_t len, unsigned long long *pfn)
{
	const char *p = memmem(rec, len, "\nPFN ", 5);
	char *end;

	if (!p)
		return -1;
	*pfn = strtoull(p + 5, &end, 0);
	return end == p + 5 ? -1 : 0;
}

static int cmp_uint(const void *a, const void *b)
{
	unsigned int x = *(const unsigned int *)a, y = *(const unsigned int *)b;

	return x < y ? -1 : x > y;
}

/* The "handle: N" values of a show_stacks_handles copy, sorted. Exits 1 if it cannot be read. */
static void load_listed(const char *stacks)
{
	FILE *f = fopen(stacks, "r");
	char line[512];
	size_t cap = 1024;

	if (!f) {
		fprintf(stderr, "po-read: %s: %s\n", stacks, strerror(errno));
		exit(1);
	}
	listed = malloc(cap * sizeof(*listed));
	while (listed && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "handle: ", 8))
			continue;
		if (n_listed == cap)
			listed = realloc(listed, (cap *= 2) * sizeof(*listed));
		if (listed)
			listed[n_listed++] = (unsigned int)strtoul(line + 8, NULL, 10);
	}
	fclose(f);
	if (!listed)
		exit(1);
	qsort(listed, n_listed, sizeof(*listed), cmp_uint);
}

static int known(unsigned int handle)
{
	size_t i;

	if (bsearch(&handle, listed, n_listed, sizeof(*listed), cmp_uint))
		return 1;
	for (i = 0; i < n_learned; i++)
		if (learned[i] == handle)
			return 1;
	return 0;
}

/*
 * The record at pfn read again in stack_handle mode, if it still has this handle; its length, else 0.
 * (The page may have changed hands since the first read: then the host keeps the short record.)
 */
static size_t reread(unsigned long long pfn, unsigned int handle)
{
	char want[32];
	ssize_t n;
	unsigned long long got;

	if (lseek(resolve_fd, (off_t)pfn, SEEK_SET) < 0)
		return 0;
	for (;;) {
		n = read(resolve_fd, one, one_size);
		if (n < 0 && errno == ENOMEM && one_size < (64u << 20)) {
			one = realloc(one, one_size *= 2);
			if (!one)
				exit(1);
			continue;
		}
		break;
	}
	if (n <= 0 || record_pfn(one, (size_t)n, &got) || got != pfn)
		return 0;
	snprintf(want, sizeof(want), "\nhandle: %u\n", handle);
	return memmem(one, (size_t)n, want, strlen(want)) ? (size_t)n : 0;
}

/* Print one record, or for an unlisted handle seen first here, its stack_handle form (see -s). */
static void emit(const char *rec, size_t len)
{
	const char *h;
	unsigned long long pfn;
	unsigned int handle;
	size_t n;

	if (resolve_fd >= 0 && (h = memmem(rec, len, "\nhandle: ", 9)) && record_pfn(rec, len, &pfn) == 0) {
		handle = (unsigned int)strtoul(h + 9, NULL, 10);
		if (!known(handle) && (n = reread(pfn, handle))) {
			if (n_learned == cap_learned) {
				cap_learned = cap_learned ? 2 * cap_learned : 64;
				learned = realloc(learned, cap_learned * sizeof(*learned));
				if (!learned)
					exit(1);
			}
			learned[n_learned++] = handle;
			rec = one;
			len = n;
		}
	}
	if (fwrite(rec, 1, len, stdout) != len) {
		perror("po-read: stdout");
		exit(1);
	}
}

/* Emit complete records from buf; return 1 once a record at or past end_pfn is seen. */
static int drain(unsigned long long end_pfn, int have_end)
{
	size_t start = 0;

	for (;;) {
		char *sep = memmem(buf + start, buf_len - start, "\n\n", 2);
		size_t rec_len;
		unsigned long long pfn;

		if (!sep)
			break;
		rec_len = (size_t)(sep - (buf + start)) + 2;
		if (have_end && record_pfn(buf + start, rec_len, &pfn) == 0 && pfn >= end_pfn)
			return 1;
		emit(buf + start, rec_len);
		start += rec_len;
	}
	memmove(buf, buf + start, buf_len - start);
	buf_len -= start;
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_FILE;
	const char *mode = NULL;
	const char *stacks = NULL;
	unsigned long long start_pfn, end_pfn = 0;
	int have_end = 0, stopped = 0, fd, opt;
	static char outbuf[1 << 20];

	while ((opt = getopt(argc, argv, "f:m:s:")) != -1) {
		if (opt == 'f')
			path = optarg;
		else if (opt == 'm')
			mode = optarg;
		else if (opt == 's')
			stacks = optarg;
		else
			usage();
	}
	if (stacks && !mode)
		usage();
	if (argc - optind < 1 || argc - optind > 2 || parse_pfn(argv[optind], &start_pfn))
		usage();
	if (argc - optind == 2) {
		if (parse_pfn(argv[optind + 1], &end_pfn))
			usage();
		have_end = 1;
	}
	fd = open(path, mode ? O_RDWR : O_RDONLY);
	if (fd < 0 && mode && (errno == EACCES || errno == EPERM || errno == EINVAL)) {
		fprintf(stderr, "po-read: %s: not writable, no mode=%s (%s)\n", path, mode, strerror(errno));
		return 3;
	}
	if (fd < 0) {
		fprintf(stderr, "po-read: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (mode) {
		char cmd[64];
		int len = snprintf(cmd, sizeof(cmd), "mode=%s", mode);
		struct statfs fs;

		/* Only debugfs's page_owner takes a mode; a file elsewhere (-f, tests) is data, never written. */
		if (fstatfs(fd, &fs) != 0 || fs.f_type != DEBUGFS_MAGIC) {
			fprintf(stderr, "po-read: %s: not on debugfs, no mode=%s\n", path, mode);
			return 3;
		}

		/* The setting belongs to this open file: other readers keep their own. */
		if (len < 0 || (size_t)len >= sizeof(cmd) || write(fd, cmd, (size_t)len) != len) {
			fprintf(stderr, "po-read: %s: the kernel refused mode=%s (%s)\n", path, mode, strerror(errno));
			return 3;
		}
	}
	if (stacks) {
		load_listed(stacks);
		one = malloc(one_size);
		resolve_fd = open(path, O_RDWR);
		if (!one || resolve_fd < 0 || write(resolve_fd, "mode=stack_handle", 17) != 17) {
			fprintf(stderr, "po-read: %s: the kernel refused mode=stack_handle (%s)\n", path, strerror(errno));
			return 3;
		}
	}
	if (start_pfn && lseek(fd, (off_t)start_pfn, SEEK_SET) < 0) {
		fprintf(stderr, "po-read: lseek %s to %llu: %s\n", path, start_pfn, strerror(errno));
		return 1;
	}
	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	buf = malloc(buf_size);
	if (!buf)
		return 1;
	for (;;) {
		ssize_t n;

		if (buf_size - buf_len < 4096) {
			buf_size *= 2;
			buf = realloc(buf, buf_size);
			if (!buf)
				return 1;
		}
		n = read(fd, buf + buf_len, buf_size - buf_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ENOMEM && buf_size < (64u << 20)) {
			/* The record did not fit: the kernel wants a bigger buffer, not a retry. */
			buf_size *= 2;
			buf = realloc(buf, buf_size);
			if (!buf)
				return 1;
			continue;
		}
		if (n < 0) {
			fprintf(stderr, "po-read: read %s: %s\n", path, strerror(errno));
			return 1;
		}
		if (n == 0)
			break;
		buf_len += (size_t)n;
		if (drain(end_pfn, have_end)) {
			stopped = 1;
			break;
		}
	}
	/* A regular file may end without a blank line; page_owner never does. */
	if (!stopped && buf_len && fwrite(buf, 1, buf_len, stdout) != buf_len)
		return 1;
	if (fflush(stdout)) {
		perror("po-read: stdout");
		return 1;
	}
	return 0;
}
