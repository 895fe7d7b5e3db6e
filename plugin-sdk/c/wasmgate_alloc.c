/* A small memory allocator for wasmgate plugins written in C, in place of wasi-libc's dlmalloc.
 *
 * dlmalloc is about 10 KB of a C component's code; a plugin allocates little (the strings and
 * lists the bindings hand over, freed after each call) and an instance is reused for many
 * requests, so segregated free lists of power-of-two blocks serve it in a few hundred bytes:
 * - every block is 2^k bytes (32 bytes up to 2 GiB) and starts with a 16-byte header holding its
 *   class, so pointers keep malloc's 16-byte alignment;
 * - a freed block goes onto its class's list and is handed out again by the next allocation of
 *   that class; new blocks are carved from the end of the heap, growing linear memory as needed
 *   (a plugin's memory limit still applies: growing past it makes malloc return NULL).
 * The cost is up to 2x the bytes asked for, and memory freed in one class is not reused by
 * another: a plugin's heap is bounded by the peak it reaches in each class.
 *
 * Compile it with the plugin's sources (it defines malloc, calloc, realloc and free, so the
 * linker takes them from here and leaves wasi-libc's out). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define WG_HEADER 16u
#define WG_MIN_SHIFT 5u  /* smallest block: 32 bytes */
#define WG_CLASSES 27u   /* largest block: 2^31 bytes */
#define WG_PAGE 65536u

typedef struct wg_block {
  struct wg_block *next; /* next free block of the same class, while free */
  uint32_t cls;          /* block size is 1 << (cls + WG_MIN_SHIFT) */
} wg_block_t;

extern unsigned char __heap_base;
static uintptr_t wg_bump, wg_limit;
static wg_block_t *wg_free[WG_CLASSES];

/* Carves `size` bytes (a multiple of 16) from the end of the heap; NULL if memory cannot grow. */
static void *wg_carve(size_t size) {
  if (!wg_bump) {
    wg_bump = ((uintptr_t)&__heap_base + WG_HEADER - 1) & ~(uintptr_t)(WG_HEADER - 1);
    wg_limit = __builtin_wasm_memory_size(0) * WG_PAGE;
  }
  if (size > wg_limit - wg_bump) {
    size_t pages = (size - (wg_limit - wg_bump) + WG_PAGE - 1) / WG_PAGE;
    if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return NULL;
    wg_limit += pages * WG_PAGE;
  }
  void *block = (void *)wg_bump;
  wg_bump += size;
  return block;
}

void *malloc(size_t n) {
  if (n > ((size_t)1 << (WG_CLASSES - 1 + WG_MIN_SHIFT)) - WG_HEADER) {
    errno = ENOMEM;
    return NULL;
  }
  uint32_t cls = 0;
  while (((size_t)1 << (cls + WG_MIN_SHIFT)) < n + WG_HEADER) cls++;
  wg_block_t *block = wg_free[cls];
  if (block) {
    wg_free[cls] = block->next;
  } else if (!(block = wg_carve((size_t)1 << (cls + WG_MIN_SHIFT)))) {
    errno = ENOMEM;
    return NULL;
  }
  block->cls = cls;
  return (unsigned char *)block + WG_HEADER;
}

void free(void *p) {
  if (!p) return;
  wg_block_t *block = (wg_block_t *)((unsigned char *)p - WG_HEADER);
  block->next = wg_free[block->cls];
  wg_free[block->cls] = block;
}

void *calloc(size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = malloc(count * size);
  if (p) memset(p, 0, count * size);
  return p;
}

void *realloc(void *p, size_t n) {
  if (!p) return malloc(n);
  wg_block_t *block = (wg_block_t *)((unsigned char *)p - WG_HEADER);
  size_t usable = ((size_t)1 << (block->cls + WG_MIN_SHIFT)) - WG_HEADER;
  if (n <= usable) return p;
  void *q = malloc(n);
  if (!q) return NULL;
  memcpy(q, p, usable);
  free(p);
  return q;
}
