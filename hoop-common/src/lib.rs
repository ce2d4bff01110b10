//! Types shared by hoop's kernel programs and its userspace loader.
//!
//! Everything here is `#[repr(C)]` plain data: it crosses the user/kernel
//! boundary through BPF maps, so layout must match on both sides.
#![no_std]
