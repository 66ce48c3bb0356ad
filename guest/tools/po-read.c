// SPDX-License-Identifier: GPL-2.0
/*
 * po-read: read one PFN range of /sys/kernel/debug/page_owner.
 *
 *   po-read [-f FILE] [-m MODE] START [END]
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
 * Built statically on the host (gcc -static -O2) and shipped in the guest image; exit status 0 on
 * success, 1 on an I/O error, 2 on bad usage, 3 when the kernel refuses MODE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_FILE "/sys/kernel/debug/page_owner"

static char *buf;
static size_t buf_size = 64 * 1024;
static size_t buf_len; /* bytes held: a partial record when FILE is a regular file */

static void usage(void)
{
	fprintf(stderr, "usage: po-read [-f FILE] [-m stack|handle|stack_handle] START [END]\n");
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
		if (fwrite(buf + start, 1, rec_len, stdout) != rec_len) {
			perror("po-read: stdout");
			exit(1);
		}
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
	unsigned long long start_pfn, end_pfn = 0;
	int have_end = 0, stopped = 0, fd, opt;
	static char outbuf[1 << 20];

	while ((opt = getopt(argc, argv, "f:m:")) != -1) {
		if (opt == 'f')
			path = optarg;
		else if (opt == 'm')
			mode = optarg;
		else
			usage();
	}
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
		struct stat st;

		/* A regular file (-f, tests) is data, not page_owner: it has no mode to set. */
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
			fprintf(stderr, "po-read: %s: a regular file has no mode=%s\n", path, mode);
			return 3;
		}

		/* The setting belongs to this open file: other readers keep their own. */
		if (len < 0 || (size_t)len >= sizeof(cmd) || write(fd, cmd, (size_t)len) != len) {
			fprintf(stderr, "po-read: %s: the kernel refused mode=%s (%s)\n", path, mode, strerror(errno));
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
