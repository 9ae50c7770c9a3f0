//! EFFECT: thin, typed wrappers over the syscalls the init makes. No decisions live here:
//! each function does one thing, and errors keep their `Errno` and name what they touched.

pub mod blkdev;
pub mod clock;
pub mod direct;
pub mod dm;
pub mod kexec;
pub mod loopdev;
pub mod module;
pub mod mount;
pub mod netlink;
pub mod pci;
pub mod power;
pub mod proc;
pub mod reap;
pub mod root;
pub mod uevent;
