//! End-to-end tests: the real `clade` binary against temporary data dirs, over its command line
//! and over HTTP.

mod suite;
