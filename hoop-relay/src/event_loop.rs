//! hoop's own event loop for plaintext relays.
//!
//! A relayed query costs each proxy the same system calls (one `epoll_wait`,
//! `recvfrom` and `sendto` per direction); what differs is the user-space
//! work around them. Under tokio about half of hoop's instructions per query
//! went to the runtime: re-arming each socket's readiness after every read,
//! the timer, signal and process checks of every park, and the scheduling of
//! the woken task. This loop keeps only what a relay needs:
//!
//! - one thread per loop, blocked in `epoll_wait` on a `mio` poll (its
//!   registrations are edge-triggered and stand for the life of the
//!   socket), called as a raw system call like the socket calls below;
//! - the loop thread stays in its runtime's context between turns instead
//!   of entering it on each (entering clones the runtime's handle);
//! - per socket, a readable and a writable flag, set by events and cleared
//!   by `EWOULDBLOCK` or by a short read or write;
//! - per task, a flag that keeps it queued at most once; a task woken on its
//!   own loop thread is queued without a system call, one woken from another
//!   thread (a hold decision, a cancel) through an eventfd;
//! - the socket calls themselves as raw system calls (through `rustix`):
//!   glibc's `recv`, `send` and `writev` are thread cancellation points,
//!   and each call pays for two atomic read-modify-writes of the thread's
//!   cancellation state that a relay never uses;
//! - per task poll, a budget of socket operations, after which the task
//!   yields and waits behind the events and the tasks already queued, so one
//!   busy session (a long COPY) cannot starve the others on its loop.
//!
//! Relays still use tokio for everything that is not their sockets' I/O:
//! each task is polled inside its runtime's context, so timers (hold
//! deadlines, the drain timeout), channels and `tokio::spawn` keep working.
//! A [`JoinHandle`] that is dropped cancels its task, which is then dropped
//! on its loop thread, so aborting a session's tokio task closes its sockets
//! as before. A task that panics is dropped and logged; the loop goes on.
//!
//! Only plaintext legs move here: a TLS leg stays a tokio stream, and its
//! session stays a tokio task.
//!
//! A socket can also be made to coalesce its reads
//! ([`LoopStream::coalesce_reads`]), for bulk transfers: its `SO_RCVLOWAT`
//! is raised, so epoll reports it only once that many bytes wait (one read
//! of 64 KiB instead of eight of 8 KiB, each with its `epoll_wait`), and
//! the loop gives it a deadline, [`COALESCE_WAIT`] after its last read. At
//! the deadline the loop lowers the mark again and wakes the reader
//! whatever is queued, so bytes below the mark (a result's last rows) wait
//! at most that long and are never stranded. A FIN or an error is reported
//! whatever the mark.

use std::{
    cell::{Cell, RefCell, UnsafeCell},
    collections::VecDeque,
    future::Future,
    io,
    mem::{ManuallyDrop, MaybeUninit},
    net::Shutdown,
    os::fd::{AsRawFd, RawFd},
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use mio::{Interest, Registry, Token};
use rustix::event::epoll::{self, EventFlags};
use slab::Slab;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tracing::error;

/// The eventfd's token; sockets use slab keys, which never reach it.
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Socket operations a task may complete per poll before it is made to
/// yield (tokio's cooperative budget is the same): a session whose sockets
/// never run dry, a long COPY say, must not starve the others on its loop.
const BUDGET: u32 = 128;
/// How long a coalescing socket's reader waits, after its last read, for
/// its low-water mark before it takes what is there.
pub const COALESCE_WAIT: Duration = Duration::from_millis(1);
/// The smallest low-water mark worth coalescing for.
const MIN_COALESCE: usize = 8 * 1024;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The loops of this process, started on first use.
struct Loops {
    loops: Vec<&'static Shared>,
    next: AtomicUsize,
}

static LOOPS: OnceLock<Loops> = OnceLock::new();

/// Starts the process's loop threads (at least one) unless they run
/// already; `hoop exec` and `hoop agent` call it with their worker-thread
/// count before any session starts. Fails if epoll, its eventfd or a thread
/// cannot be created.
pub fn init(threads: usize) -> io::Result<()> {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = lock(&STARTING);
    if LOOPS.get().is_none() {
        let _ = LOOPS.set(start(threads.max(1))?);
    }
    Ok(())
}

/// Whether sessions can be spawned: starts one loop if none runs yet (a
/// library user that never called [`init`]); logs why not if it cannot.
pub fn available() -> bool {
    if LOOPS.get().is_some() {
        return true;
    }
    match init(1) {
        Ok(()) => true,
        Err(e) => {
            error!(error = %e, "cannot start the relay loop; sessions stay on tokio");
            false
        }
    }
}

fn start(threads: usize) -> io::Result<Loops> {
    let mut loops = Vec::with_capacity(threads);
    for id in 0..threads {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            id,
            registry,
            waker,
            remote: Mutex::new(Vec::new()),
        }));
        std::thread::Builder::new()
            .name(format!("hoop-relay-{id}"))
            .spawn(move || run(shared, poll))?;
        loops.push(shared);
    }
    Ok(Loops {
        loops,
        next: AtomicUsize::new(0),
    })
}

/// A loop as other threads see it.
struct Shared {
    id: usize,
    registry: Registry,
    waker: mio::Waker,
    /// Tasks woken from other threads.
    remote: Mutex<Vec<Arc<Task>>>,
}

/// A loop as its own thread sees it.
struct Local {
    shared: &'static Shared,
    queue: RefCell<VecDeque<Arc<Task>>>,
    sources: RefCell<Slab<Source>>,
    /// What is left of the running task's [`BUDGET`].
    budget: Cell<u32>,
    /// The keys of the sources that coalesce their reads (some may be
    /// stale: a key is checked against its source's deadline).
    coalescing: RefCell<Vec<usize>>,
}

thread_local! {
    static LOCAL: Cell<Option<&'static Local>> = const { Cell::new(None) };
}

fn local() -> Option<&'static Local> {
    LOCAL.with(Cell::get)
}

/// One socket's readiness and the wakers waiting on it.
///
/// `readable` and `writable` are cleared when the socket is drained or
/// filled; the closed flags never are. A FIN or an error often arrives in
/// the same event as the last data: the short read of that data must not
/// leave the reader waiting for an edge that already came.
struct Source {
    /// The socket (open while its source is in the slab: a stream leaves
    /// the slab before its socket closes).
    fd: RawFd,
    /// While reads coalesce: when the reader stops waiting for the
    /// low-water mark.
    coalesce_until: Option<Instant>,
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Source {
    fn waiter(&mut self, dir: Direction) -> &mut Option<Waker> {
        match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    /// Makes `waker` the one woken by the next event in `dir` (kept when it
    /// is already registered, as it usually is).
    fn wait(&mut self, dir: Direction, waker: &Waker) {
        match self.waiter(dir) {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }
}

/// The loop thread: run what is queued, wait for events, repeat.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the thread owns the epoll instance for as long as it runs"
)]
fn run(shared: &'static Shared, poll: mio::Poll) {
    let local: &'static Local = Box::leak(Box::new(Local {
        shared,
        queue: RefCell::new(VecDeque::new()),
        sources: RefCell::new(Slab::new()),
        budget: Cell::new(BUDGET),
        coalescing: RefCell::new(Vec::new()),
    }));
    LOCAL.with(|l| l.set(Some(local)));
    let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
    let mut woken: Vec<(usize, Direction)> = Vec::new();
    // The runtime whose context the loop thread is in. It is entered once
    // and left only for a task of another runtime (in tests), not on every
    // turn: entering clones its handle and leaving drops it.
    let mut current: Option<tokio::runtime::Handle> = None;
    // How many of the queued tasks this turn still runs: only those queued
    // when it began. One that yields, or is woken again while it runs,
    // waits for the next turn, after the events.
    let mut ready = 0usize;
    loop {
        let entered = current.as_ref().map(tokio::runtime::Handle::enter);
        let runtime = current.as_ref().map(tokio::runtime::Handle::id);
        let next = 'turns: loop {
            while ready > 0 {
                let other = local
                    .queue
                    .borrow()
                    .front()
                    .filter(|task| Some(task.runtime.id()) != runtime)
                    .map(|task| task.runtime.clone());
                if let Some(other) = other {
                    break 'turns other;
                }
                ready -= 1;
                let Some(task) = local.queue.borrow_mut().pop_front() else {
                    break;
                };
                local.budget.set(BUDGET);
                task.run_entered();
            }
            wait(local, &poll, &mut events, &mut woken);
            ready = local.queue.borrow().len();
        };
        drop(entered);
        current = Some(next);
    }
}

/// Waits for events (not at all when tasks are queued) and wakes the tasks
/// waiting on them.
///
/// `epoll_wait` is called on mio's epoll as a raw system call (through
/// `rustix`), as the sockets' reads and writes are: glibc's is a thread
/// cancellation point, two atomic read-modify-writes per call. The events
/// are read as mio reads them.
fn wait(
    local: &Local,
    poll: &mio::Poll,
    events: &mut Vec<epoll::Event>,
    woken: &mut Vec<(usize, Direction)>,
) {
    const NOW: rustix::event::Timespec = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let until_deadline;
    let timeout = if !local.queue.borrow().is_empty() {
        Some(&NOW)
    } else if let Some(deadline) = next_coalesce_deadline(local) {
        let left = deadline.saturating_duration_since(Instant::now());
        until_deadline = rustix::event::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        Some(&until_deadline)
    } else {
        None
    };
    // SAFETY: the descriptor is mio's epoll, which `poll` owns and keeps
    // open for the whole call.
    #[allow(unsafe_code)]
    let epoll_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(poll.as_raw_fd()) };
    events.clear();
    if let Err(e) = epoll::wait(epoll_fd, rustix::buffer::spare_capacity(events), timeout) {
        if e != rustix::io::Errno::INTR {
            // epoll_wait only fails on a bad descriptor or argument.
            error!(error = %io::Error::from(e), "relay loop cannot wait for events");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        return;
    }
    {
        let mut sources = local.sources.borrow_mut();
        for &epoll::Event { flags, data } in events.iter() {
            let key = usize::try_from(data.u64()).unwrap_or(usize::MAX);
            if key == WAKER_TOKEN.0 {
                let remote = std::mem::take(&mut *lock(&local.shared.remote));
                local.queue.borrow_mut().extend(remote);
                continue;
            }
            let Some(source) = sources.get_mut(key) else {
                continue;
            };
            let readable = flags.intersects(EventFlags::IN | EventFlags::PRI);
            let writable = flags.contains(EventFlags::OUT);
            let error = flags.contains(EventFlags::ERR);
            // As mio reads them: a hang-up closes both halves, a FIN (a
            // read hang-up with the data) the read half, an error both.
            let hangup = flags.contains(EventFlags::HUP);
            if hangup || (readable && flags.contains(EventFlags::RDHUP)) || error {
                source.read_closed = true;
            }
            if hangup || error {
                source.write_closed = true;
            }
            if readable || source.read_closed {
                source.readable = true;
                if source.reader.is_some() {
                    woken.push((key, Direction::Read));
                }
            }
            if writable || source.write_closed {
                source.writable = true;
                if source.writer.is_some() {
                    woken.push((key, Direction::Write));
                }
            }
        }
    }
    expire_coalescing(local, woken);
    for (key, dir) in woken.drain(..) {
        wake_waiter(local, key, dir);
    }
}

/// The earliest deadline of the sources that coalesce their reads.
fn next_coalesce_deadline(local: &Local) -> Option<Instant> {
    let coalescing = local.coalescing.borrow();
    if coalescing.is_empty() {
        return None;
    }
    let sources = local.sources.borrow();
    coalescing
        .iter()
        .filter_map(|&key| sources.get(key).and_then(|s| s.coalesce_until))
        .min()
}

/// Ends the coalescing of every source whose deadline has passed: its
/// low-water mark goes back to one byte and its reader is woken to take
/// what waits below the old mark. Drops stale keys.
fn expire_coalescing(local: &Local, woken: &mut Vec<(usize, Direction)>) {
    let mut coalescing = local.coalescing.borrow_mut();
    if coalescing.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut sources = local.sources.borrow_mut();
    coalescing.retain(|&key| {
        let Some(source) = sources.get_mut(key) else {
            return false;
        };
        match source.coalesce_until {
            Some(until) if until <= now => {
                source.coalesce_until = None;
                // Best effort: a socket that refuses still reports its end
                // of stream and errors, and the reader is woken below.
                let _ = set_recv_lowat(source.fd, 1);
                // Linux reports the socket again when its mark drops below
                // what waits (`tcp_set_rcvlowat`); the flag and the wake-up
                // do not rely on it.
                source.readable = true;
                if source.reader.is_some() {
                    woken.push((key, Direction::Read));
                }
                false
            }
            Some(_) => true,
            None => false,
        }
    });
}

/// A socket's `SOL_SOCKET` option of type `int`, as a size.
fn int_option(fd: RawFd, name: libc::c_int) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket (see `Source::fd`), and `value` and
    // `len` are live and describe a `c_int`.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(value).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a socket's `SO_RCVLOWAT`.
fn set_recv_lowat(fd: RawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket (see `Source::fd`), and the option
    // value is a live `c_int` whose size is passed with it.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wakes the task waiting on one side of a socket. The waker stays
/// registered (a task that waits again on the same socket, the usual case,
/// then costs no clone), but it is called outside the `sources` borrow: a
/// waker may be anyone's, and one that polls a socket must not find the
/// slab borrowed.
fn wake_waiter(local: &Local, key: usize, dir: Direction) {
    let waker = local
        .sources
        .borrow_mut()
        .get_mut(key)
        .and_then(|s| s.waiter(dir).take());
    let Some(waker) = waker else { return };
    waker.wake_by_ref();
    if let Some(source) = local.sources.borrow_mut().get_mut(key) {
        // Unless the task registered another waker meanwhile.
        source.waiter(dir).get_or_insert(waker);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (a push or a take), so poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A task's future, reached only from the thread of the task's loop.
///
/// `run_entered` is the one place that polls or takes it, and it checks
/// that it runs on that thread (`schedule` queues a task woken anywhere on
/// its own loop, and a loop runs only its own queue) before touching the
/// slot; a loop polls one task at a time and never re-enters
/// `run_entered`. `Drop for Task` has the task to itself. A mutex here cost
/// a locked compare-exchange and a swap on every poll.
struct FutureSlot(UnsafeCell<Option<BoxFuture>>);

// SAFETY: the contents are `Send`, and they are reached either through
// `&mut` or by one thread at a time, the loop's (see above).
#[allow(unsafe_code)]
unsafe impl Sync for FutureSlot {}

/// A spawned future.
struct Task {
    shared: &'static Shared,
    future: FutureSlot,
    runtime: tokio::runtime::Handle,
    scheduled: AtomicBool,
    cancelled: AtomicBool,
}

impl Task {
    /// Polls the task; the caller has entered its runtime's context.
    fn run_entered(self: &Arc<Self>) {
        if local().is_none_or(|l| l.shared.id != self.shared.id) {
            error!("a relay task was run off its own loop; it was not polled");
            return;
        }
        self.scheduled.store(false, Ordering::Release);
        // SAFETY: on the task's own loop thread (checked above), the only
        // one that reaches the slot while the task is shared; see
        // `FutureSlot`.
        #[allow(unsafe_code)]
        let slot = unsafe { &mut *self.future.0.get() };
        if self.cancelled.load(Ordering::Acquire) {
            drop_guarded(slot.take());
            return;
        }
        let Some(future) = slot.as_mut() else { return };
        // A waker that borrows this task's reference instead of taking one
        // of its own (an atomic increment and decrement per poll saved).
        // SAFETY: `from_raw` adopts a reference that `ManuallyDrop` never
        // releases, so the count is untouched; `self` keeps the task alive
        // for as long as `waker` is used, and a clone of it (kept by
        // whoever the future registers with) takes a reference of its own.
        #[allow(unsafe_code)]
        let waker = ManuallyDrop::new(Waker::from(unsafe { Arc::from_raw(Arc::as_ptr(self)) }));
        let mut cx = Context::from_waker(&waker);
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => drop_guarded(slot.take()),
            Err(_) => {
                error!("a relay task panicked; its session was closed");
                drop_guarded(slot.take());
            }
        }
    }
}

/// Drops a task's future; a panic in its destructors is logged, so the
/// loop (and every other session on it) goes on.
fn drop_guarded(future: Option<BoxFuture>) {
    if future.is_some() && catch_unwind(AssertUnwindSafe(|| drop(future))).is_err() {
        error!("dropping a relay task panicked");
    }
}

impl Drop for Task {
    /// A task that no waker or handle can reach any more is dropped where
    /// its last reference goes (on its loop, as queued tasks are held
    /// there): its future, if unfinished, is dropped as `run` drops one, in
    /// its runtime's context and without taking the loop down if it panics.
    fn drop(&mut self) {
        let future = self.future.0.get_mut().take();
        if future.is_some() {
            let _runtime = self.runtime.enter();
            drop_guarded(future);
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            schedule(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            schedule(self.clone());
        }
    }
}

fn schedule(task: Arc<Task>) {
    match local() {
        Some(local) if local.shared.id == task.shared.id => {
            local.queue.borrow_mut().push_back(task);
        }
        _ => {
            let shared = task.shared;
            lock(&shared.remote).push(task);
            if let Err(e) = shared.waker.wake() {
                error!(error = %e, "cannot wake the relay loop");
            }
        }
    }
}

/// Runs `future` on one of the loops, inside the current tokio runtime's
/// context.
///
/// # Panics
///
/// Outside a tokio runtime, or when no loop could be started ([`available`]
/// says whether one runs).
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    assert!(available(), "no relay loop could be started");
    let loops = LOOPS.get().expect("available() started the loops");
    let shared = loops.loops[loops.next.fetch_add(1, Ordering::Relaxed) % loops.loops.len()];
    let (tx, rx) = oneshot::channel();
    let task = Arc::new(Task {
        shared,
        future: FutureSlot(UnsafeCell::new(Some(Box::pin(async move {
            let _ = tx.send(future.await);
        })))),
        runtime: tokio::runtime::Handle::current(),
        scheduled: AtomicBool::new(true),
        cancelled: AtomicBool::new(false),
    });
    schedule(task.clone());
    JoinHandle {
        task,
        result: rx,
        done: false,
    }
}

/// Awaits a spawned task's output: `None` if it panicked. Dropping it
/// cancels the task.
pub struct JoinHandle<T> {
    task: Arc<Task>,
    result: oneshot::Receiver<T>,
    /// The output (or the news of a panic) has arrived: nothing to cancel.
    done: bool,
}

impl<T> Future for JoinHandle<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let out = std::task::ready!(Pin::new(&mut self.result).poll(cx));
        self.done = true;
        Poll::Ready(out.ok())
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.task.cancelled.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// A plaintext TCP leg driven by the loop it is first polled on.
#[derive(Debug)]
pub struct LoopStream {
    io: mio::net::TcpStream,
    /// The slab key and the loop, once registered.
    registration: Option<(usize, usize)>,
    /// Reads were made to coalesce and the loop may not have ended it yet.
    coalescing: bool,
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl LoopStream {
    /// Takes a socket over from tokio (it is deregistered there).
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Self> {
        let std = stream.into_std()?;
        std.set_nonblocking(true)?;
        Ok(Self {
            io: mio::net::TcpStream::from_std(std),
            registration: None,
            coalescing: false,
        })
    }

    /// The slab key on this thread's loop, registering on first use.
    #[inline]
    fn key(&mut self, local: &'static Local) -> io::Result<usize> {
        match self.registration {
            Some((key, id)) if id == local.shared.id => Ok(key),
            _ => self.register(local),
        }
    }

    /// Registers the socket with `local`'s loop (the first poll); a socket
    /// registered with another loop fails.
    fn register(&mut self, local: &'static Local) -> io::Result<usize> {
        if self.registration.is_some() {
            return Err(io::Error::other(
                "a relay socket was polled on another loop than its own",
            ));
        }
        let mut sources = local.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let key = entry.key();
        local.shared.registry.register(
            &mut self.io,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // Edge-triggered: assume ready until told otherwise.
        entry.insert(Source {
            fd: self.io.as_raw_fd(),
            coalesce_until: None,
            readable: true,
            writable: true,
            read_closed: false,
            write_closed: false,
            reader: None,
            writer: None,
        });
        self.registration = Some((key, local.shared.id));
        Ok(key)
    }

    /// Runs `op` while the socket is ready in `dir`; on `EWOULDBLOCK`, or
    /// when `drained` says the socket was emptied (or filled), clears the
    /// readiness so the next call waits for an event. The flag returned with
    /// a result says that `op` drained the socket and `cx`'s waker is
    /// registered for its next event: calling again before that waker is
    /// woken would only return `Pending`.
    fn poll_op<R>(
        &mut self,
        cx: &mut Context<'_>,
        dir: Direction,
        mut op: impl FnMut(&mut mio::net::TcpStream) -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<(R, bool)>> {
        let Some(local) = local() else {
            return Poll::Ready(Err(io::Error::other(
                "a relay socket was polled outside the relay loop",
            )));
        };
        let key = self.key(local)?;
        let budget = local.budget.get();
        if budget == 0 {
            // Yield: requeued behind the tasks already waiting.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Clears the readiness and registers `cx`'s waker for the next event.
        let park = |local: &Local| {
            let mut sources = local.sources.borrow_mut();
            let source = &mut sources[key];
            match dir {
                Direction::Read => source.readable = false,
                Direction::Write => source.writable = false,
            }
            source.wait(dir, cx.waker());
        };
        loop {
            {
                let mut sources = local.sources.borrow_mut();
                let source = &mut sources[key];
                let ready = match dir {
                    Direction::Read => source.readable || source.read_closed,
                    Direction::Write => source.writable || source.write_closed,
                };
                if !ready {
                    source.wait(dir, cx.waker());
                    return Poll::Pending;
                }
            }
            match op(&mut self.io) {
                Ok(r) => {
                    let parked = drained(&r);
                    if parked {
                        park(local);
                    }
                    local.budget.set(budget - 1);
                    return Poll::Ready(Ok((r, parked)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => park(local),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for LoopStream {
    fn drop(&mut self) {
        let Some((key, id)) = self.registration else {
            return;
        };
        match local() {
            Some(local) if local.shared.id == id => {
                let _ = local.shared.registry.deregister(&mut self.io);
                let source = local.sources.borrow_mut().try_remove(key);
                // Its wakers are dropped after the borrow ends.
                drop(source);
            }
            // Tasks are only dropped on their loop, so this is not reached;
            // closing the socket removes it from epoll, and the slab entry
            // stays behind rather than be touched from another thread.
            _ => error!("a relay socket was dropped off its loop"),
        }
    }
}

impl LoopStream {
    /// Makes reads coalesce (see the module's documentation): epoll reports
    /// the socket once `lowat` bytes wait, or the loop wakes its reader
    /// [`COALESCE_WAIT`] after its last read, whichever comes first; then
    /// the mark goes back to one byte and reads are as before until this is
    /// called again. Call it on the stream's loop (from its task); false
    /// when it is not there, or when the socket refuses the mark.
    pub fn coalesce_reads(&mut self, lowat: usize) -> bool {
        let Some(local) = local() else {
            return false;
        };
        let Ok(key) = self.key(local) else {
            return false;
        };
        let mut sources = local.sources.borrow_mut();
        let source = &mut sources[key];
        if source.coalesce_until.is_none() {
            // A mark above half the receive buffer would make Linux grow the
            // buffer and clamp the advertised window to the mark
            // (`tcp_set_rcvlowat`): the mark stays at a quarter of the
            // buffer, and a buffer too small for a useful mark is left as is.
            let Ok(buffer) = int_option(source.fd, libc::SO_RCVBUF) else {
                return false;
            };
            let lowat = lowat.min(buffer / 4);
            if lowat < MIN_COALESCE || set_recv_lowat(source.fd, lowat).is_err() {
                return false;
            }
            local.coalescing.borrow_mut().push(key);
        }
        source.coalesce_until = Some(Instant::now() + COALESCE_WAIT);
        self.coalescing = true;
        true
    }

    /// Whether reads coalesce now (the loop ends it at the deadline).
    pub fn is_coalescing(&mut self) -> bool {
        if !self.coalescing {
            return false;
        }
        let still = match (local(), self.registration) {
            (Some(local), Some((key, id))) if id == local.shared.id => local
                .sources
                .borrow()
                .get(key)
                .is_some_and(|s| s.coalesce_until.is_some()),
            _ => false,
        };
        self.coalescing = still;
        still
    }

    /// Moves a coalescing socket's deadline to [`COALESCE_WAIT`] from now
    /// (after a read: the deadline counts from the last one).
    fn extend_coalescing(&mut self) {
        let (Some(local), Some((key, _))) = (local(), self.registration) else {
            return;
        };
        match local.sources.borrow_mut().get_mut(key) {
            Some(Source {
                coalesce_until: Some(until),
                ..
            }) => *until = Instant::now() + COALESCE_WAIT,
            _ => self.coalescing = false,
        }
    }

    /// Reads into uninitialised memory: how many of its first bytes `read`
    /// wrote (`0` at end of stream, or when `dst` is empty), and whether the
    /// read parked (see [`LoopStream::poll_op`]).
    fn poll_read_uninit(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<(usize, bool)>> {
        let want = dst.len();
        let read = self.poll_op(
            cx,
            Direction::Read,
            |io| {
                rustix::net::recv(&*io, &mut *dst, rustix::net::RecvFlags::empty())
                    .map(|((filled, _), _)| filled.len())
                    .map_err(io::Error::from)
            },
            // A short read emptied the receive queue (EOF stays readable).
            |&n| n > 0 && n < want,
        );
        if self.coalescing && matches!(read, Poll::Ready(Ok(_))) {
            self.extend_coalescing();
        }
        read
    }

    /// Reads into `buf`'s spare capacity, growing its length by what was
    /// read: `0` at end of stream (or when `buf` has no spare capacity, as
    /// `tokio_util::io::poll_read_buf`). The relay's read path, without a
    /// `ReadBuf` in between; see [`ReadBytes::parked`].
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<ReadBytes>> {
        let spare = buf.spare_capacity_mut();
        if spare.is_empty() {
            return Poll::Ready(Ok(ReadBytes {
                n: 0,
                parked: false,
            }));
        }
        let (n, parked) = std::task::ready!(self.poll_read_uninit(cx, spare))?;
        // SAFETY: `read` initialised the first `n` spare bytes.
        #[allow(unsafe_code)]
        unsafe {
            buf.set_len(buf.len() + n);
        }
        Poll::Ready(Ok(ReadBytes { n, parked }))
    }
}

/// What one read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBytes {
    /// Bytes read; `0` at end of stream.
    pub n: usize,
    /// The read emptied the socket and left the context's waker registered
    /// for its next data: reading again before that waker is woken would
    /// only return `Pending` (and register the same waker again).
    pub parked: bool,
}

impl AsyncRead for LoopStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `poll_read_uninit` only writes to these bytes.
        #[allow(unsafe_code)]
        let unfilled = unsafe { buf.unfilled_mut() };
        let (n, _) = std::task::ready!(self.get_mut().poll_read_uninit(cx, unfilled))?;
        // SAFETY: `read` initialised the first `n` bytes of `unfilled`.
        #[allow(unsafe_code)]
        unsafe {
            buf.assume_init(n);
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LoopStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let want = buf.len();
        self.get_mut()
            .poll_op(
                cx,
                Direction::Write,
                |io| {
                    rustix::net::send(&*io, buf, rustix::net::SendFlags::NOSIGNAL)
                        .map_err(io::Error::from)
                },
                |&n| n < want,
            )
            .map_ok(|(n, _)| n)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        self.get_mut()
            .poll_op(
                cx,
                Direction::Write,
                |io| rustix::io::writev(&*io, bufs).map_err(io::Error::from),
                |&n| n < want,
            )
            .map_ok(|(n, _)| n)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.io.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: (the accepted side, the dialling side).
    pub(crate) async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (dialled, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.expect("accept").0, dialled.expect("connect"))
    }

    /// `f`, given ten seconds.
    pub(crate) fn within<F: Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(10), f)
    }

    #[tokio::test]
    async fn a_task_echoes_more_than_the_socket_buffers_hold() {
        let (server, mut client) = pair().await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        // Echo until EOF, then shut down: 8 MiB cannot fit in the socket
        // buffers, so both partial writes and waiting for writability occur.
        let echo = spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                let n = server.read(&mut buf).await?;
                if n == 0 {
                    server.shutdown().await?;
                    return Ok::<_, io::Error>(total);
                }
                server.write_all(&buf[..n]).await?;
                total += n;
            }
        });
        let sent: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let (mut rd, mut wr) = client.split();
        let write = async {
            wr.write_all(&sent).await?;
            wr.shutdown().await
        };
        let mut got = Vec::new();
        let (w, r) = within(async { tokio::join!(write, rd.read_to_end(&mut got)) })
            .await
            .expect("echo finished in time");
        w.expect("client write");
        r.expect("client read");
        assert!(got == sent, "echoed bytes differ");
        let echoed = within(echo).await.expect("task ended in time");
        assert_eq!(echoed.map(Result::ok), Some(Some(sent.len())));
    }

    #[tokio::test]
    async fn a_read_that_parks_is_woken_by_the_next_data_without_polling_again() {
        let (server, mut client) = pair().await;
        // Queued before the first read, so that read registers no waker
        // through a Pending: only the parked read's registration is there.
        client.write_all(b"first").await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let (first_read, after_first_read) = tokio::sync::oneshot::channel();
        let mut first_read = Some(first_read);
        let reader = spawn(async move {
            let mut buf = BytesMut::with_capacity(1024);
            let mut reads = Vec::new();
            let mut parked = false;
            // As the relay does: after a parked read, wait for a wake-up
            // (the task's only waker is the one the read registered).
            std::future::poll_fn(|cx| {
                while reads.len() < 2 {
                    if std::mem::take(&mut parked) {
                        return Poll::Pending;
                    }
                    match std::task::ready!(server.poll_read_buf(cx, &mut buf)) {
                        Ok(r) => {
                            reads.push((buf.split().freeze(), r.parked));
                            parked = r.parked;
                            if let Some(tx) = first_read.take() {
                                let _ = tx.send(());
                            }
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Poll::Ready(Ok::<_, io::Error>(std::mem::take(&mut reads)))
            })
            .await
        });
        within(after_first_read)
            .await
            .expect("first read in time")
            .expect("first read");
        // Long enough for the loop to go idle, with the reader parked.
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"second").await.expect("write");
        let reads = within(reader).await.expect("woken by the second write");
        assert_eq!(
            reads.map(Result::ok),
            Some(Some(vec![
                (Bytes::from_static(b"first"), true),
                (Bytes::from_static(b"second"), true)
            ]))
        );
    }

    /// A coalescing reader waits for its low-water mark, so bytes below it
    /// are taken at the deadline (not at once, and not never), and reads
    /// are as before afterwards.
    #[tokio::test]
    async fn a_coalescing_read_takes_what_is_below_the_mark_at_its_deadline() {
        let (server, mut client) = pair().await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let task = spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            // In step with the client: it is connected and waiting.
            let n = server.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"ready");
            assert!(server.coalesce_reads(64 * 1024), "SO_RCVLOWAT refused");
            assert!(server.is_coalescing());
            let started = Instant::now();
            server.write_all(b"go").await?;
            let n = server.read(&mut buf).await?;
            let waited = started.elapsed();
            let after = server.is_coalescing();
            // Back to one byte: the next message is read as it comes.
            server.write_all(b"again").await?;
            let started_again = Instant::now();
            let m = server.read(&mut buf).await?;
            Ok::<_, io::Error>((n, waited, after, m, started_again.elapsed()))
        });
        client.write_all(b"ready").await.expect("write");
        let mut go = [0u8; 2];
        client.read_exact(&mut go).await.expect("go");
        client.write_all(&[7u8; 100]).await.expect("write");
        let mut again = [0u8; 5];
        client.read_exact(&mut again).await.expect("again");
        client.write_all(&[8u8; 10]).await.expect("write");
        let (n, waited, after, m, _) = within(task)
            .await
            .expect("in time")
            .expect("task ran")
            .expect("reads");
        assert_eq!(n, 100, "the bytes below the mark were not all taken");
        // Without the mark the read returns as soon as the 100 bytes land
        // (tens of microseconds here); a loaded machine only makes it later.
        assert!(
            waited >= COALESCE_WAIT * 9 / 10,
            "read after {waited:?}: the low-water mark was not in effect"
        );
        assert!(!after, "coalescing did not end at the deadline");
        assert_eq!(m, 10);
    }

    /// The mark stays at a quarter of the receive buffer (a higher one
    /// makes Linux clamp the advertised window to it), and a buffer too
    /// small for a useful mark is not coalesced.
    #[tokio::test]
    async fn the_mark_stays_within_a_quarter_of_the_receive_buffer() {
        let (roomy, _a) = pair().await;
        let (cramped, _b) = pair().await;
        nix::sys::socket::setsockopt(&cramped, nix::sys::socket::sockopt::RcvBuf, &4096)
            .expect("SO_RCVBUF");
        let mut roomy = LoopStream::from_tokio(roomy).expect("into the loop");
        let mut cramped = LoopStream::from_tokio(cramped).expect("into the loop");
        let task = spawn(async move {
            let fd = roomy.io.as_raw_fd();
            let buffer = int_option(fd, libc::SO_RCVBUF)?;
            let coalesced = roomy.coalesce_reads(1 << 30);
            let mark = int_option(fd, libc::SO_RCVLOWAT)?;
            Ok::<_, io::Error>((buffer, coalesced, mark, cramped.coalesce_reads(64 * 1024)))
        });
        let (buffer, coalesced, mark, cramped) = within(task)
            .await
            .expect("in time")
            .expect("task ran")
            .expect("socket options");
        assert!(
            coalesced,
            "a default buffer ({buffer} bytes) was not coalesced"
        );
        assert_eq!(mark, buffer / 4, "mark {mark} for a buffer of {buffer}");
        assert!(!cramped, "a 4 KiB buffer was coalesced");
    }

    /// A FIN reaches a coalescing reader with the data before it, whatever
    /// the mark.
    #[tokio::test]
    async fn end_of_stream_reaches_a_coalescing_reader() {
        let (server, mut client) = pair().await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let task = spawn(async move {
            assert!(server.coalesce_reads(64 * 1024));
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.map(|_| got)
        });
        client.write_all(b"last rows").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let got = within(task).await.expect("in time");
        assert_eq!(got.map(Result::ok), Some(Some(b"last rows".to_vec())));
    }

    #[tokio::test]
    async fn a_task_sees_eof_and_tokio_timers_work_inside_it() {
        let (server, client) = pair().await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let task = spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut buf = [0u8; 16];
            server.read(&mut buf).await
        });
        drop(client);
        let n = within(task).await.expect("in time");
        assert_eq!(n.map(Result::ok), Some(Some(0)));
    }

    #[tokio::test]
    async fn eof_that_arrives_with_the_last_data_is_not_missed() {
        let (server, mut client) = pair().await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let reader = spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match server.read(&mut buf).await? {
                    0 => return Ok::<_, io::Error>(got),
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        // The reader is registered and waiting; now keep the loop busy
        // while the data and the FIN both arrive, so that one event
        // reports them together and the read of the data is short.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let blocker = spawn(async {
            std::thread::sleep(Duration::from_millis(200));
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"abc").await.expect("write");
        client.shutdown().await.expect("shutdown");
        assert_eq!(within(blocker).await.ok(), Some(Some(())));
        let got = within(reader).await.expect("EOF seen in time");
        assert_eq!(got.map(Result::ok), Some(Some(b"abc".to_vec())));
    }

    #[tokio::test]
    async fn a_task_whose_socket_never_runs_dry_yields_to_the_others() {
        // Queued before the reader starts: one-byte reads never block.
        const QUEUED: usize = 32 * 1024;
        let (server, mut client) = pair().await;
        client.write_all(&vec![7u8; QUEUED]).await.expect("write");
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let order = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        let (a, b, s) = (order.clone(), order.clone(), started.clone());
        let reader = spawn(async move {
            let mut byte = [0u8; 1];
            for _ in 0..QUEUED {
                server.read_exact(&mut byte).await?;
                s.store(true, Ordering::SeqCst);
            }
            Ok::<_, io::Error>(a.fetch_add(1, Ordering::SeqCst))
        });
        // Spawned once the reader runs: it reaches the loop through the
        // eventfd, which the loop must look at between the reader's turns.
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let other = spawn(async move { b.fetch_add(1, Ordering::SeqCst) });
        let other = within(other).await.expect("in time");
        let reader = within(reader).await.expect("in time");
        assert_eq!(other, Some(0), "the other task waited for the reader");
        assert_eq!(reader.map(Result::ok), Some(Some(1)));
    }

    /// Records the thread that drops it.
    struct DropProbe(std::sync::mpsc::Sender<Option<String>>);

    impl Drop for DropProbe {
        fn drop(&mut self) {
            let _ = self
                .0
                .send(std::thread::current().name().map(str::to_owned));
        }
    }

    #[tokio::test]
    async fn dropping_the_handle_drops_the_task_on_its_loop() {
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = DropProbe(tx);
        // The task waits on a channel whose sender the test keeps, so its
        // waker stays registered: only cancelling it ends it.
        let (keep, wait) = tokio::sync::oneshot::channel::<()>();
        let handle = spawn(async move {
            let _probe = probe;
            let _ = wait.await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            rx.try_recv().is_err(),
            "the task ended before its handle was dropped"
        );
        drop(handle);
        let thread = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the task was dropped");
        assert!(
            thread
                .as_deref()
                .is_some_and(|t| t.starts_with("hoop-relay-")),
            "dropped on {thread:?}"
        );
        drop(keep);
    }

    #[test]
    fn tasks_of_two_runtimes_queued_together_each_run_in_their_own() {
        // The loop enters a runtime once for a run of its tasks: a task of
        // another runtime queued among them must still see its own.
        let build = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let runtimes = [build(), build()];
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let rt = &runtimes[i % 2];
                let id = rt.handle().id();
                let _entered = rt.enter();
                spawn(async move {
                    for _ in 0..50 {
                        if tokio::runtime::Handle::current().id() != id {
                            return false;
                        }
                        // Requeued: the tasks of both runtimes interleave.
                        tokio::task::yield_now().await;
                    }
                    true
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let own = runtimes[i % 2].block_on(async { within(task).await.ok() });
            assert_eq!(own, Some(Some(true)), "task {i}");
        }
    }

    #[tokio::test]
    async fn a_panicking_task_ends_alone_and_the_loop_goes_on() {
        let panicked = spawn(async {
            panic!("deliberate");
        });
        assert_eq!(within(panicked).await.ok(), Some(None::<()>));
        let next = spawn(async { 7 });
        assert_eq!(within(next).await.ok(), Some(Some(7)));
    }

    /// Panics when dropped.
    struct PanicOnDrop;

    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("deliberate, in a destructor");
        }
    }

    #[tokio::test]
    async fn a_task_that_panics_when_dropped_does_not_take_the_loop_down() {
        // Cancelled: dropped by its loop.
        let (keep, wait) = tokio::sync::oneshot::channel::<()>();
        let cancelled = spawn(async move {
            let _bomb = PanicOnDrop;
            let _ = wait.await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(cancelled);
        // Abandoned: nothing can wake it, and its handle lets go without
        // cancelling, so the task goes with its last reference.
        let mut abandoned = spawn(async {
            let _bomb = PanicOnDrop;
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.done = true;
        drop(abandoned);
        let next = spawn(async { 9 });
        assert_eq!(within(next).await.ok(), Some(Some(9)));
        drop(keep);
    }

    #[tokio::test]
    async fn a_wake_from_another_thread_reaches_the_loop() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = spawn(async move { rx.await.ok() });
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = tx.send(5);
        });
        assert_eq!(within(task).await.ok(), Some(Some(Some(5))));
    }

    #[tokio::test]
    async fn a_task_is_never_polled_off_its_own_loop() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let handle = spawn(std::future::poll_fn(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Poll::<()>::Pending
        }));
        within(async {
            while polls.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the loop polls the task");
        // This thread is no loop: the future must stay untouched (its slot
        // has no lock; only the task's loop may reach it).
        handle.task.run_entered();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_loop_stream_polled_off_the_loop_fails_cleanly() {
        let (server, _client) = pair().await;
        let mut server = LoopStream::from_tokio(server).expect("into the loop");
        let mut buf = [0u8; 4];
        let err = server.read(&mut buf).await.expect_err("not on a loop");
        assert!(err.to_string().contains("outside the relay loop"), "{err}");
    }
}
