/* Private to src/upstream. */
#ifndef BULWARK_UPSTREAM_INTERNAL_H
#define BULWARK_UPSTREAM_INTERNAL_H

#include "upstream/upstream.h"

/* The group's queue: set up when a set is built, torn down with it. */
void upstream_queue_init(struct upstream_group *g);
void upstream_queue_fini(struct upstream_group *g);

#endif
