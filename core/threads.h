// How many intra-op threads NestScope uses when nobody says: $NESTSCOPE_THREADS, else all cores.
#pragma once

namespace nestscope {

// $NESTSCOPE_THREADS when set to a positive number (e.g. a background training run leaving a
// core free), else the machine's hardware threads (at least 1).
int default_threads();

}  // namespace nestscope
