#include "cpu_features.h"

#include <cstdlib>
#include <cstring>
#include <strings.h>

namespace densescale {

Isa active_isa() {
  static const Isa isa = [] {
    Isa best = detect_isa();
    if (const char* cap = std::getenv("DENSESCALE_ISA")) {
      Isa want = Isa::Avx512;
      if (strcasecmp(cap, "generic") == 0) want = Isa::Generic;
      else if (strcasecmp(cap, "avx2") == 0) want = Isa::Avx2;
      if (static_cast<int>(want) < static_cast<int>(best)) best = want;
    }
    return best;
  }();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace densescale
