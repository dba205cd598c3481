//! Dropping privileges: once the device, the sockets, the addresses and the routes exist,
//! udptun needs no privilege at all. `--user`/`--group` switch to an unprivileged account, and
//! every capability is given up in any case, before the first fetch, parse or lookup.

use std::ffi::CString;
use std::io;

use anyhow::{Context, Result, anyhow, bail};

/// A user's ids as the system databases give them.
fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t)> {
    let c_name = CString::new(name).map_err(|_| anyhow!("--user: bad name"))?;
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: all-zero passwd is valid; getpwnam_r writes into it and `buffer`.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(c_name.as_ptr(), &mut entry, buffer.as_mut_ptr().cast(), buffer.len(), &mut result)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc)).context(format!("--user {name}"));
    }
    if result.is_null() {
        bail!("--user {name}: no such user");
    }
    Ok((entry.pw_uid, entry.pw_gid))
}

fn lookup_group(name: &str) -> Result<libc::gid_t> {
    let c_name = CString::new(name).map_err(|_| anyhow!("--group: bad name"))?;
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: as for getpwnam_r.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    let rc = unsafe {
        libc::getgrnam_r(c_name.as_ptr(), &mut entry, buffer.as_mut_ptr().cast(), buffer.len(), &mut result)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc)).context(format!("--group {name}"));
    }
    if result.is_null() {
        bail!("--group {name}: no such group");
    }
    Ok(entry.gr_gid)
}

/// Resolves the names; done before anything is created, so that a typo fails early.
pub fn resolve(user: &str, group: Option<&str>) -> Result<(libc::uid_t, libc::gid_t)> {
    let (uid, primary) = lookup_user(user)?;
    let gid = match group {
        Some(group) => lookup_group(group)?,
        None => primary,
    };
    Ok((uid, gid))
}

/// Switches every thread of the process to `uid`/`gid` with no supplementary groups, for good.
pub fn drop_to(uid: libc::uid_t, gid: libc::gid_t) -> Result<()> {
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()).context(what.to_string()) }
    };
    // glibc applies these to every thread of the process.
    // SAFETY: plain system calls with valid arguments.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), "dropping supplementary groups")?;
        check(libc::setresgid(gid, gid, gid), "switching group")?;
        check(libc::setresuid(uid, uid, uid), "switching user")?;
        if uid != 0 && libc::setuid(0) == 0 {
            bail!("could regain root after dropping privileges");
        }
    }
    Ok(())
}

/// Gives up every capability of the calling thread for good (effective, permitted, inheritable,
/// ambient, and the bounding set when allowed), and sets no-new-privileges so that no later
/// `exec` regains any. Capabilities are per thread: call it before starting other threads,
/// which then inherit the empty sets.
pub fn drop_capabilities() -> Result<()> {
    use caps::{CapSet, Capability};
    let context = |set: &str| format!("dropping the {set} capabilities");
    // The bounding set first: changing it needs CAP_SETPCAP, which the clears below remove.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding).map_err(|e| anyhow!("{}: {e}", context("bounding")))?;
    }
    for (set, name) in [
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
    ] {
        caps::clear(None, set).map_err(|e| anyhow!("{}: {e}", context(name)))?;
    }
    // SAFETY: a plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error()).context("setting no-new-privileges");
    }
    Ok(())
}
