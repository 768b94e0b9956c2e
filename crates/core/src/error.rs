//! The one error type of the core, with the stable `code` that JavaScript sees.

use std::fmt;

use nix::errno::Errno;

/// Everything that can go wrong in the core.
///
/// [`Error::code`] is the stable string the Node layer puts on the JS error's `code`
/// property: the errno name for operating-system errors, one of ours otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A system call failed; `op` names it for the message.
    Os { op: &'static str, errno: Errno },
    /// A system call failed, and `detail` says what that means here and what to do.
    OsDetail {
        op: &'static str,
        errno: Errno,
        detail: String,
    },
    /// More descriptors than one message can carry.
    TooManyFds { count: usize, max: usize },
    /// A message larger than the configured limit (`max`), or than the socket allows
    /// (`max: None`: the kernel said EMSGSIZE).
    MessageTooLarge { len: usize, max: Option<usize> },
    /// The kernel truncated the control data (MSG_CTRUNC): some descriptors were lost.
    /// The ones that did arrive (`received`) have been closed.
    FdsTruncated { received: usize },
    /// The peer broke the wire format. Every descriptor queued so far has been closed.
    Protocol(String),
    /// A caller passed a value the call cannot use.
    InvalidArgument(String),
    /// The call does not fit the object's state (e.g. sending after `end()`).
    State { code: &'static str, message: String },
    /// The operation does not exist on this operating system.
    Unsupported(String),
    /// A call into the JavaScript runtime failed (for the Node layer: a Node-API call,
    /// as when the environment is shutting down).
    Runtime(String),
}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an errno from the named system call.
    pub fn os(op: &'static str, errno: Errno) -> Self {
        Error::Os { op, errno }
    }

    /// Wraps an errno from the named system call, with a message of its own.
    pub fn os_with_detail(op: &'static str, errno: Errno, detail: String) -> Self {
        Error::OsDetail { op, errno, detail }
    }

    /// The stable code: `"EPIPE"`, `"EMFILE"`, … or `"ERR_…"`.
    pub fn code(&self) -> String {
        match self {
            Error::Os { errno, .. } | Error::OsDetail { errno, .. } => errno_name(*errno).into(),
            Error::TooManyFds { .. } => "ERR_TOO_MANY_FDS".into(),
            Error::MessageTooLarge { .. } => "ERR_MESSAGE_TOO_LARGE".into(),
            Error::FdsTruncated { .. } => "ERR_FDS_TRUNCATED".into(),
            Error::Protocol(_) => "ERR_PROTOCOL".into(),
            Error::InvalidArgument(_) => "ERR_INVALID_ARG_VALUE".into(),
            Error::Unsupported(_) => "ERR_UNSUPPORTED_PLATFORM".into(),
            Error::Runtime(_) => "ERR_NODE_API".into(),
            Error::State { code, .. } => (*code).into(),
        }
    }

    /// The errno behind an operating-system error, if that is what this is.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Os { errno, .. } | Error::OsDetail { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The system call an operating-system error came from (`"sendmsg"`; `"fcntl"` for
    /// `fcntl(F_GETFD)`), as Node's errors carry it in `syscall`.
    pub fn syscall(&self) -> Option<&'static str> {
        match self {
            Error::Os { op, .. } | Error::OsDetail { op, .. } => {
                Some(op.split('(').next().unwrap_or(op))
            }
            _ => None,
        }
    }
}

/// The symbolic name of an errno (`EPIPE`), as Node's own errors spell it: the errnos a
/// socket, descriptor or memory call can return, from a table (the same names as libuv's
/// `uv_err_name`), `"UNKNOWN"` for any other.
pub fn errno_name(errno: Errno) -> &'static str {
    macro_rules! names {
        ($($name:ident),* $(,)?) => {
            $(if errno as i32 == libc::$name { return stringify!($name); })*
        };
    }
    names!(
        EPERM,
        ENOENT,
        ESRCH,
        EINTR,
        EIO,
        ENXIO,
        E2BIG,
        EBADF,
        ECHILD,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        EBUSY,
        EEXIST,
        EXDEV,
        ENODEV,
        ENOTDIR,
        EISDIR,
        EINVAL,
        ENFILE,
        EMFILE,
        ENOTTY,
        EFBIG,
        ENOSPC,
        ESPIPE,
        EROFS,
        EMLINK,
        EPIPE,
        ERANGE,
        ENAMETOOLONG,
        ENOSYS,
        ENOTEMPTY,
        ELOOP,
        ENOTSOCK,
        EDESTADDRREQ,
        EMSGSIZE,
        EPROTOTYPE,
        ENOPROTOOPT,
        EPROTONOSUPPORT,
        ESOCKTNOSUPPORT,
        EOPNOTSUPP,
        EAFNOSUPPORT,
        EADDRINUSE,
        EADDRNOTAVAIL,
        ENETDOWN,
        ENETUNREACH,
        ECONNABORTED,
        ECONNRESET,
        ENOBUFS,
        EISCONN,
        ENOTCONN,
        ESHUTDOWN,
        ETOOMANYREFS,
        ETIMEDOUT,
        ECONNREFUSED,
        EHOSTUNREACH,
        EALREADY,
        EINPROGRESS,
        ECANCELED,
        EOVERFLOW,
    );
    "UNKNOWN"
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os { op, errno } => {
                write!(f, "{op} failed: {} ({})", errno.desc(), errno_name(*errno))?;
                match errno {
                    Errno::EPIPE => write!(f, "; the peer has closed its end"),
                    Errno::ECONNRESET => write!(
                        f,
                        "; the peer closed its end without reading everything sent to it"
                    ),
                    Errno::EMFILE | Errno::ENFILE => {
                        write!(f, "; close descriptors or raise the limit (ulimit -n)")
                    }
                    Errno::EBADF => write!(f, "; the descriptor is not open"),
                    Errno::ENOTSOCK => write!(f, "; the descriptor is not a socket"),
                    Errno::EAGAIN => write!(f, "; the socket is non-blocking and not ready"),
                    _ => Ok(()),
                }
            }
            Error::OsDetail { op, errno, detail } => {
                write!(f, "{op} failed ({}): {detail}", errno_name(*errno))
            }
            Error::TooManyFds { count, max } => write!(
                f,
                "cannot pass {count} descriptors in one message: the limit is {max}; \
                 split them over several messages"
            ),
            Error::MessageTooLarge {
                len,
                max: Some(max),
            } => write!(
                f,
                "message of {len} bytes is larger than the limit of {max} bytes; \
                 send it in smaller parts or raise the limit"
            ),
            Error::MessageTooLarge { len, max: None } => write!(
                f,
                "message of {len} bytes is larger than the socket can carry as one record \
                 (EMSGSIZE); send it in smaller parts or use a stream socket"
            ),
            Error::FdsTruncated { received } => write!(
                f,
                "the kernel truncated the passed descriptors (MSG_CTRUNC): the {received} that \
                 arrived were closed; the receiver is at its descriptor limit or its \
                 control buffer is too small"
            ),
            Error::Protocol(what) => write!(f, "protocol error from the peer: {what}"),
            Error::InvalidArgument(what) => write!(f, "{what}"),
            Error::Unsupported(what) => write!(f, "{what}"),
            Error::Runtime(what) => write!(f, "{what}"),
            Error::State { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_errno_names_or_ours() {
        assert_eq!(Error::os("sendmsg", Errno::EPIPE).code(), "EPIPE");
        assert_eq!(Error::os("recvmsg", Errno::EMFILE).code(), "EMFILE");
        assert_eq!(
            Error::TooManyFds {
                count: 300,
                max: 253
            }
            .code(),
            "ERR_TOO_MANY_FDS"
        );
        assert_eq!(Error::Protocol("x".into()).code(), "ERR_PROTOCOL");
    }

    #[test]
    fn errno_names_come_from_the_table_and_syscalls_from_the_operation() {
        assert_eq!(errno_name(Errno::ECONNRESET), "ECONNRESET");
        assert_eq!(errno_name(Errno::ETOOMANYREFS), "ETOOMANYREFS");
        assert_eq!(errno_name(Errno::from_raw(100_000)), "UNKNOWN");
        let e = Error::os("fcntl(F_GETFD)", Errno::EBADF);
        assert_eq!((e.code().as_str(), e.syscall()), ("EBADF", Some("fcntl")));
        assert_eq!(Error::Protocol("x".into()).syscall(), None);
    }

    #[test]
    fn messages_say_what_to_do() {
        let m = Error::os("sendmsg", Errno::EPIPE).to_string();
        assert!(
            m.contains("sendmsg failed") && m.contains("peer has closed"),
            "{m}"
        );
        let m = Error::TooManyFds {
            count: 300,
            max: 253,
        }
        .to_string();
        assert!(m.contains("300") && m.contains("253"), "{m}");
    }
}
