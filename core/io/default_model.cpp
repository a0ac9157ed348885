#include "core/io/default_model.h"

#include "core/error.h"

#ifdef NESTSCOPE_DEFAULT_MODEL_PATH
// .incbin keeps the 3 MB checkpoint out of the compiler's front end: the assembler copies it.
__asm__(".section .rodata\n"
        ".balign 16\n"
        ".global nestscope_default_model_begin\n"
        "nestscope_default_model_begin:\n"
        ".incbin \"" NESTSCOPE_DEFAULT_MODEL_PATH "\"\n"
        ".global nestscope_default_model_end\n"
        "nestscope_default_model_end:\n"
        ".previous\n");
extern "C" const uint8_t nestscope_default_model_begin[];
extern "C" const uint8_t nestscope_default_model_end[];
#endif

namespace nestscope {

bool has_default_model() {
#ifdef NESTSCOPE_DEFAULT_MODEL_PATH
  return true;
#else
  return false;
#endif
}

std::vector<uint8_t> default_model_bytes() {
#ifdef NESTSCOPE_DEFAULT_MODEL_PATH
  return {nestscope_default_model_begin, nestscope_default_model_end};
#else
  throw Error("this build has no embedded default model (resources/models/picogpt.safetensors was missing "
              "at build time); pass --model FILE");
#endif
}

}  // namespace nestscope
