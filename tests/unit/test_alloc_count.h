/*
 * test_alloc_count.h - counts every allocator call of a test program linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (target_link_options in
 * tests/unit/CMakeLists.txt). Include it in exactly one file of the program; read
 * `allocations` before and after the code whose allocation contract is tested.
 */
#ifndef TG_TEST_ALLOC_COUNT_H
#define TG_TEST_ALLOC_COUNT_H

#include <stddef.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static unsigned long allocations;

void *__wrap_malloc(size_t size)
{
    allocations++;
    return __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    allocations++;
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    allocations++;
    return __real_realloc(p, size);
}

#endif
