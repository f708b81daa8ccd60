// Each op registers its Python functions on the module; bindings.cpp only calls these.
#pragma once
#include <pybind11/pybind11.h>

namespace densescale {
void register_contrastive_loss(pybind11::module_& m);
void register_search(pybind11::module_& m);
void register_screen(pybind11::module_& m);
}  // namespace densescale
