//! ODE_t solvers.
