/* SPDX-License-Identifier: MIT */
/* --- poolalloc.cdef.h: cffi cdef of the C core (a subset of native/include/poolalloc.h) ------
 * Ownership is written next to each pointer: who frees what. Constants use `...` so that their
 * values come from the real header at compile time. */

#define PA_API_VERSION ...
#define PA_MIN_ALIGN ...
#define PA_PAGE_ALIGN ...
#define PA_MAX_ALIGN ...
#define PA_NUMA_ANY ...
#define PA_NUMA_LOCAL ...
#define PA_DEBUG_POISON ...
#define PA_DEBUG_CANARY ...
#define PA_DEBUG_UNPOOLED ...
#define PA_FAULT_MAP ...
#define PA_FAULT_BIND ...

typedef struct pa_pool_s pa_pool_t;

/* @header-types pa_config_t pa_close_report_t pa_stats_t pa_class_stats_t pa_api_t
 * The builder puts these structs here from native/include/poolalloc.h: written once. */

/* ---- pools ---- */
void pa_config_init(pa_config_t *cfg);
int pa_pool_create(const pa_config_t *cfg, pa_pool_t **out); /* *out: caller ends it with pa_pool_destroy */
int pa_pool_close(pa_pool_t *pool);
int pa_pool_close_report(pa_pool_t *pool, pa_close_report_t *out);  /* out: caller's */
int pa_pool_decay(pa_pool_t *pool, uint64_t max_age_ms, size_t *released_bytes);
void pa_pool_destroy(pa_pool_t *pool);                       /* drops the handle; pool freed once empty */
int pa_pool_trim(pa_pool_t *pool, size_t *released_bytes);
int pa_pool_stats(pa_pool_t *pool, pa_stats_t *out);
int pa_pool_class_stats(pa_pool_t *pool, unsigned cls, pa_class_stats_t *out);
int pa_pool_check(pa_pool_t *pool);

/* ---- blocks ---- */
int pa_alloc(pa_pool_t *pool, size_t size, size_t align, void **out);   /* *out: caller frees with pa_free */
int pa_free(void *p);
int pa_alloc_batch(pa_pool_t *pool, size_t size, size_t align, size_t n, void **out); /* each out[i]: pa_free */
int pa_free_batch(void *const *ptrs, size_t n, size_t *freed);
int pa_block_size(const void *p, size_t *out);
int pa_block_pool(const void *p, pa_pool_t **out);           /* *out: borrowed, not owned */

/* ---- size classes ---- */
unsigned pa_class_count(void);
int pa_class_info(unsigned cls, size_t *block_size, size_t *slab_bytes);
int pa_size_class(size_t size, size_t align, unsigned *cls);

/* ---- fault injection ---- */
int pa_fault_set(unsigned what, unsigned skip, unsigned count, int err);

/* ---- NUMA ---- */
int pa_numa_fake(unsigned nodes, const int *cpu_to_node, unsigned ncpus);
int pa_numa_fake_set_cpu(int cpu);
int pa_numa_page_node(const void *p, int *node);
int pa_pool_node_stats(pa_pool_t *pool, int node, pa_stats_t *out);
int pa_numa_node_count(unsigned *out);

/* ---- binding helpers (native/ffi/poolalloc.csrc.c; not in the C API) ---- */
int pa_py_alloc(pa_pool_t *pool, size_t size, size_t align, uintptr_t *addr, size_t *usable); /* *addr: pa_py_free */
int pa_py_free(uintptr_t addr);

/* ---- the function table for other extensions ---- */
const pa_api_t *pa_api(void);                                /* static: never freed */
