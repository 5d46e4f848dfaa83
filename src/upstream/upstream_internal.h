/* Private to src/upstream. */
#ifndef BULWARK_UPSTREAM_INTERNAL_H
#define BULWARK_UPSTREAM_INTERNAL_H

#include "upstream/upstream.h"

/* The group's queue: set up when a set is built, torn down with it. */
void upstream_queue_init(struct upstream_group *g);
void upstream_queue_fini(struct upstream_group *g);

/* When the oldest waiter of g's queue was queued (loop_now_ms), over every
 * worker, or only over the other workers; UINT64_MAX: none waits. */
uint64_t upstream_oldest_waiter_ms(const struct upstream_group *g, bool others_only);
/* How many requests wait in g's queue in other workers. */
uint32_t upstream_waiters_elsewhere(const struct upstream_group *g);

#endif
