// SPDX-License-Identifier: GPL-2.0
/*
 * leaky: leaks pages on demand, the ground truth for pagelab's leak hunt.
 *
 *   echo N > /sys/kernel/debug/leaky/leak    allocate N order-0 pages and keep them
 *   echo N > /sys/kernel/debug/leaky/churn   allocate N order-0 pages and free them again (the control)
 *   cat /sys/kernel/debug/leaky/held         pages held so far
 *
 * Both paths allocate through the same helper, so their stacks differ only in the caller; whatever is
 * still held is freed when the module is unloaded.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>

#define LEAKY_MAX_PAGES (1UL << 20)

static LIST_HEAD(held_pages);
static unsigned long held_count;
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

static int __init leaky_init(void)
{
	leaky_dir = debugfs_create_dir("leaky", NULL);
	debugfs_create_file("leak", 0200, leaky_dir, NULL, &leak_fops);
	debugfs_create_file("churn", 0200, leaky_dir, NULL, &churn_fops);
	debugfs_create_file("held", 0400, leaky_dir, NULL, &held_fops);
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
}

module_init(leaky_init);
module_exit(leaky_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Leak pages on demand: ground truth for pagelab");
