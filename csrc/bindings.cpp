// Glue only: the module densescale._C and the registration of every op.
#include <pybind11/pybind11.h>

#include "cpu_features.h"
#include "ops.h"

#ifdef DENSESCALE_OPENMP
#include <omp.h>
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "densescale CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";
  m.def("isa", [] { return std::string(densescale::isa_name(densescale::active_isa())); },
        "SIMD instruction set the kernels use on this CPU: 'avx512', 'avx2' or 'generic'.");
  m.def("max_threads", [] {
#ifdef DENSESCALE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  }, "Number of OpenMP threads the kernels use.");
  densescale::register_contrastive_loss(m);
  densescale::register_search(m);
  densescale::register_screen(m);
}
