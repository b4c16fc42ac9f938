//! Steering policy: which destinations get which path. (Filled in next.)
