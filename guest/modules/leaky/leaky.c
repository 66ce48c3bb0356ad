// SPDX-License-Identifier: GPL-2.0
/*
 * leaky: leaks pages on demand, the ground truth for pagelab's leak hunt.
 *
 *   echo N > /sys/kernel/debug/leaky/leak    allocate N order-0 pages and keep them
 *   echo N > /sys/kernel/debug/leaky/churn   allocate N order-0 pages and free them again (the control)
 *   cat /sys/kernel/debug/leaky/held         pages held so far
 *   echo N > /sys/kernel/debug/leaky/slab    kmalloc N 1 KiB objects and keep them (a slab leak)
 *   echo N > /sys/kernel/debug/leaky/vmalloc vmalloc an N-page area and keep it (a vmalloc leak)
 *   echo N > /sys/kernel/debug/leaky/cache   allocate N fresh order-0 pages, then free the previous N
 *                                            (a bounded cache: it never holds more than one batch)
 *   cat /sys/kernel/debug/leaky/stats        what each path holds now
 *
 * leak and churn allocate through the same helper, so their stacks differ only in the caller. The slab,
 * vmalloc and cache paths call the allocator from their own noinline function, which is the frame
 * pagelab must name once it skips the allocator internals. Whatever is held is freed on unload.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#define LEAKY_MAX_PAGES (1UL << 20)
#define LEAKY_OBJECT_SIZE 1024

static LIST_HEAD(held_pages);
static unsigned long held_count;
/* The slab objects and vmalloc areas chain through their own first bytes: no bookkeeping allocations
 * that would land on the same stacks and blur the page counts. */
static LIST_HEAD(slab_objects);
static unsigned long slab_count;
static LIST_HEAD(vmalloc_areas);
static unsigned long vmalloc_pages;
static LIST_HEAD(cache_pages);
static unsigned long cache_count;
static DEFINE_MUTEX(leaky_lock);
static struct dentry *leaky_dir;

/* noinline keeps one recognisable frame per path in page_owner's stacks. */
static noinline struct page *leaky_alloc_page(void)
{
	return alloc_pages(GFP_KERNEL, 0);
}

static int parse_count(const char __user *ubuf, size_t len, unsigned long *count)
{
	int err = kstrtoul_from_user(ubuf, len, 0, count);

	if (err)
		return err;
	if (*count > LEAKY_MAX_PAGES)
		return -E2BIG;
	return 0;
}

static noinline long leaky_leak(unsigned long count)
{
	unsigned long i;

	for (i = 0; i < count; i++) {
		struct page *page = leaky_alloc_page();

		if (!page)
			return -ENOMEM;
		/* An allocated order-0 page's lru belongs to its owner: chain the leak through it. */
		list_add_tail(&page->lru, &held_pages);
		held_count++;
	}
	return 0;
}

static noinline long leaky_churn(unsigned long count)
{
	LIST_HEAD(batch);
	struct page *page, *next;
	unsigned long i;
	long ret = 0;

	/* Hold the whole batch before freeing, so the control costs the same peak as the leak. */
	for (i = 0; i < count; i++) {
		page = leaky_alloc_page();
		if (!page) {
			ret = -ENOMEM;
			break;
		}
		list_add_tail(&page->lru, &batch);
	}
	list_for_each_entry_safe(page, next, &batch, lru) {
		list_del(&page->lru);
		__free_pages(page, 0);
	}
	return ret;
}

static noinline long leaky_slab_leak(unsigned long count)
{
	unsigned long i;

	for (i = 0; i < count; i++) {
		struct list_head *obj = kmalloc(LEAKY_OBJECT_SIZE, GFP_KERNEL);

		if (!obj)
			return -ENOMEM;
		list_add_tail(obj, &slab_objects);
		slab_count++;
	}
	return 0;
}

static noinline long leaky_vmalloc_leak(unsigned long pages)
{
	struct list_head *area;

	if (!pages)
		return 0;
	area = vmalloc(pages * PAGE_SIZE);
	if (!area)
		return -ENOMEM;
	list_add_tail(area, &vmalloc_areas);
	vmalloc_pages += pages;
	return 0;
}

/* A bounded cache: the fresh batch replaces the previous one, so it never holds more than N pages. */
static noinline long leaky_cache_refill(unsigned long count)
{
	LIST_HEAD(fresh);
	struct page *page, *next;
	unsigned long i;

	for (i = 0; i < count; i++) {
		page = alloc_pages(GFP_KERNEL, 0);
		if (!page)
			break;
		list_add_tail(&page->lru, &fresh);
	}
	list_for_each_entry_safe(page, next, &cache_pages, lru) {
		list_del(&page->lru);
		__free_pages(page, 0);
	}
	list_splice(&fresh, &cache_pages);
	cache_count = i;
	return i == count ? 0 : -ENOMEM;
}

static ssize_t locked_write(const char __user *ubuf, size_t len, long (*fn)(unsigned long))
{
	unsigned long count;
	long err = parse_count(ubuf, len, &count);

	if (err)
		return err;
	mutex_lock(&leaky_lock);
	err = fn(count);
	mutex_unlock(&leaky_lock);
	return err ? err : len;
}

static ssize_t slab_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	return locked_write(ubuf, len, leaky_slab_leak);
}

static ssize_t vmalloc_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	return locked_write(ubuf, len, leaky_vmalloc_leak);
}

static ssize_t cache_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	return locked_write(ubuf, len, leaky_cache_refill);
}

static ssize_t stats_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[160];
	int n;

	mutex_lock(&leaky_lock);
	n = scnprintf(buf, sizeof(buf), "leak_pages %lu\nslab_objects %lu\nvmalloc_pages %lu\ncache_pages %lu\n",
		      held_count, slab_count, vmalloc_pages, cache_count);
	mutex_unlock(&leaky_lock);
	return simple_read_from_buffer(ubuf, len, ppos, buf, n);
}

static ssize_t leak_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	unsigned long count;
	long err = parse_count(ubuf, len, &count);

	if (err)
		return err;
	mutex_lock(&leaky_lock);
	err = leaky_leak(count);
	mutex_unlock(&leaky_lock);
	return err ? err : len;
}

static ssize_t churn_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	unsigned long count;
	long err = parse_count(ubuf, len, &count);

	if (err)
		return err;
	err = leaky_churn(count);
	return err ? err : len;
}

static ssize_t held_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[32];
	int n;

	mutex_lock(&leaky_lock);
	n = scnprintf(buf, sizeof(buf), "%lu\n", held_count);
	mutex_unlock(&leaky_lock);
	return simple_read_from_buffer(ubuf, len, ppos, buf, n);
}

static const struct file_operations leak_fops = {
	.owner = THIS_MODULE,
	.write = leak_write,
};

static const struct file_operations churn_fops = {
	.owner = THIS_MODULE,
	.write = churn_write,
};

static const struct file_operations held_fops = {
	.owner = THIS_MODULE,
	.read = held_read,
};

static const struct file_operations slab_fops = {
	.owner = THIS_MODULE,
	.write = slab_write,
};

static const struct file_operations vmalloc_fops = {
	.owner = THIS_MODULE,
	.write = vmalloc_write,
};

static const struct file_operations cache_fops = {
	.owner = THIS_MODULE,
	.write = cache_write,
};

static const struct file_operations stats_fops = {
	.owner = THIS_MODULE,
	.read = stats_read,
};

static int __init leaky_init(void)
{
	leaky_dir = debugfs_create_dir("leaky", NULL);
	debugfs_create_file("leak", 0200, leaky_dir, NULL, &leak_fops);
	debugfs_create_file("churn", 0200, leaky_dir, NULL, &churn_fops);
	debugfs_create_file("held", 0400, leaky_dir, NULL, &held_fops);
	debugfs_create_file("slab", 0200, leaky_dir, NULL, &slab_fops);
	debugfs_create_file("vmalloc", 0200, leaky_dir, NULL, &vmalloc_fops);
	debugfs_create_file("cache", 0200, leaky_dir, NULL, &cache_fops);
	debugfs_create_file("stats", 0400, leaky_dir, NULL, &stats_fops);
	return 0;
}

static void __exit leaky_exit(void)
{
	struct page *page, *next;

	debugfs_remove_recursive(leaky_dir);
	list_for_each_entry_safe(page, next, &held_pages, lru) {
		list_del(&page->lru);
		__free_pages(page, 0);
	}
	held_count = 0;
	while (!list_empty(&slab_objects)) {
		struct list_head *obj = slab_objects.next;

		list_del(obj);
		kfree(obj);
	}
	while (!list_empty(&vmalloc_areas)) {
		struct list_head *area = vmalloc_areas.next;

		list_del(area);
		vfree(area);
	}
	list_for_each_entry_safe(page, next, &cache_pages, lru) {
		list_del(&page->lru);
		__free_pages(page, 0);
	}
}

module_init(leaky_init);
module_exit(leaky_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Leak pages on demand: ground truth for pagelab");
