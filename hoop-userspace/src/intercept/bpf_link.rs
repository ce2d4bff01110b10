//! cgroup BPF links through the raw `bpf(2)` link commands.
//!
//! aya creates cgroup links too, but keeps their fds private; hoop needs
//! them to pin a link in bpffs (so it outlives the agent), to re-open a
//! pinned one after a restart, to point it at the new agent's program
//! (`BPF_LINK_UPDATE`, atomic: no connect sees no program), to detach it
//! even while another process holds it (`BPF_LINK_DETACH`), and to ask which
//! cgroup it is on. Each wrapper is one system call on a fixed-layout
//! `bpf_attr` prefix; the kernel zero-fills the rest of the union.
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_attach_type` values of hoop's three programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupAttachPoint {
    /// `BPF_CGROUP_INET4_CONNECT`.
    Connect4,
    /// `BPF_CGROUP_INET6_CONNECT`.
    Connect6,
    /// `BPF_CGROUP_SOCK_OPS`.
    SockOps,
}

impl CgroupAttachPoint {
    /// All three, in attach order.
    pub const ALL: [Self; 3] = [Self::Connect4, Self::Connect6, Self::SockOps];

    fn raw(self) -> u32 {
        match self {
            Self::SockOps => 3,
            Self::Connect4 => 10,
            Self::Connect6 => 11,
        }
    }

    /// The name used in pin file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect4 => "connect4",
            Self::Connect6 => "connect6",
            Self::SockOps => "sockops",
        }
    }

    /// The inverse of [`CgroupAttachPoint::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// What the kernel says about a cgroup link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLinkInfo {
    /// The link's id.
    pub id: u32,
    /// The attached program's id.
    pub prog_id: u32,
    /// The cgroup's id; 0 once the cgroup is gone (the kernel auto-detaches
    /// links of a removed cgroup but the link object lives on while pinned).
    pub cgroup_id: u64,
    /// Raw `bpf_attach_type`.
    pub attach_type: u32,
}

/// An owned cgroup BPF link. Dropping it closes the fd: the link is
/// detached unless it is pinned or another fd refers to it.
#[derive(Debug)]
pub struct CgroupLink {
    fd: OwnedFd,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// `struct bpf_link_info` up to the cgroup member of its union.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    pad2: u32,
}

/// Calls `bpf(cmd, attr, sizeof attr)`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly aligned `#[repr(C)]` prefix of
    // `union bpf_attr` for `cmd`, and the size passed is its exact size; the
    // kernel reads (and for some commands writes) only within it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // Fds are non-negative while borrowed.
    fd.as_raw_fd() as u32
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let raw = i32::try_from(ret)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bpf(2) returned a non-fd"))?;
    // SAFETY: a successful BPF_LINK_CREATE/BPF_OBJ_GET returns a new fd that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl CgroupLink {
    /// Attaches `program` to the cgroup directory `cgroup` with a link
    /// (`BPF_LINK_CREATE`). Link-based cgroup attachments always stack
    /// (`BPF_F_ALLOW_MULTI` semantics), so this works beside other tools'
    /// programs on the same cgroup.
    pub fn create(
        program: BorrowedFd<'_>,
        cgroup: BorrowedFd<'_>,
        point: CgroupAttachPoint,
    ) -> io::Result<Self> {
        let mut attr = LinkCreateAttr {
            prog_fd: fd_u32(program),
            target_fd: fd_u32(cgroup),
            attach_type: point.raw(),
            flags: 0,
        };
        let fd = owned_fd(sys_bpf(BPF_LINK_CREATE, &mut attr)?)?;
        Ok(Self { fd })
    }

    /// Pins the link at `path` on a bpffs: it then stays attached after
    /// this process exits.
    pub fn pin(&self, path: &Path) -> io::Result<()> {
        let c = c_path(path)?;
        let mut attr = ObjAttr {
            pathname: c.as_ptr() as u64,
            bpf_fd: fd_u32(self.fd.as_fd()),
            file_flags: 0,
        };
        sys_bpf(BPF_OBJ_PIN, &mut attr).map(drop)
    }

    /// Opens a pinned link.
    pub fn from_pin(path: &Path) -> io::Result<Self> {
        let c = c_path(path)?;
        let mut attr = ObjAttr {
            pathname: c.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        let fd = owned_fd(sys_bpf(BPF_OBJ_GET, &mut attr)?)?;
        let link = Self { fd };
        // A pinned map or program at that path is not a link.
        link.info()?;
        Ok(link)
    }

    /// The kernel's view of the link.
    pub fn info(&self) -> io::Result<CgroupLinkInfo> {
        let mut info = RawLinkInfo::default();
        let mut attr = InfoAttr {
            bpf_fd: fd_u32(self.fd.as_fd()),
            info_len: std::mem::size_of::<RawLinkInfo>() as u32,
            info: std::ptr::from_mut(&mut info) as u64,
        };
        sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        // BPF_LINK_TYPE_CGROUP = 3.
        if info.link_type != 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bpf link of type {} is not a cgroup link", info.link_type),
            ));
        }
        Ok(CgroupLinkInfo {
            id: info.id,
            prog_id: info.prog_id,
            cgroup_id: info.cgroup_id,
            attach_type: info.attach_type,
        })
    }

    /// Points the link at another program of the same type, atomically.
    pub fn update_program(&self, program: BorrowedFd<'_>) -> io::Result<()> {
        let mut attr = LinkUpdateAttr {
            link_fd: fd_u32(self.fd.as_fd()),
            new_prog_fd: fd_u32(program),
            flags: 0,
            old_prog_fd: 0,
        };
        sys_bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
    }

    /// Detaches the link from its cgroup now, whoever else holds it.
    /// Detaching a link whose cgroup is gone is not an error.
    pub fn detach(&self) -> io::Result<()> {
        let mut attr = LinkDetachAttr {
            link_fd: fd_u32(self.fd.as_fd()),
        };
        match sys_bpf(BPF_LINK_DETACH, &mut attr) {
            Ok(_) => Ok(()),
            // Already detached (the cgroup went away).
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl CgroupLinkInfo {
    /// Whether the link is on this attach point.
    pub fn is(&self, point: CgroupAttachPoint) -> bool {
        self.attach_type == point.raw()
    }
}
