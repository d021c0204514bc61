package spool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// DefaultFileName is the database file name inside the data directory.
const DefaultFileName = "medplum-agent-queue.sqlite"

// DefaultCommitWindow lets writers released by one commit join the next
// one, so eight device connections share a sync instead of alternating in
// two half-size batches.
const DefaultCommitWindow = time.Millisecond

const (
	busyTimeout = 5 * time.Second
	// checkpointEvery paces background checkpoints while writes happen.
	checkpointEvery = 200 * time.Millisecond
	// walBackstopPages lets SQLite checkpoint on commit when the background
	// checkpoints cannot finish: under steady writes a passive checkpoint
	// never catches up with the last frame, so only this one lets the WAL
	// start over. SQLite's default; it keeps the WAL within a few MiB.
	walBackstopPages = 1000
	// walSizeLimit truncates the WAL file back to this size after a spike.
	walSizeLimit = 8 << 20
	// Below lowDiskBytes free, or after a full disk, the WAL is checkpointed
	// every lowDiskWALPages and truncated each time it starts over, so it
	// cannot take the last free space and leave the checkpoint, which must
	// grow the database file, none to work with.
	lowDiskBytes    = 64 << 20
	lowDiskWALPages = 32
	// maxBatch bounds one group commit, so a burst cannot build an
	// arbitrarily large transaction.
	maxBatch = 256
	// opQueue bounds writers waiting for the committer.
	opQueue = 1024
)

// Errors returned by the store.
var (
	ErrClosed     = errors.New("spool: store closed")
	ErrNotFound   = errors.New("spool: no such message")
	ErrNoDatabase = errors.New("spool: queue database does not exist")
	errNotLeader  = errors.New("spool: dispatch lease held by another process")
)

// Options configure Open.
type Options struct {
	// Path is the database file, normally <dataDir>/medplum-agent-queue.sqlite.
	Path string
	// AgentID prefixes callback ids: Agent/{AgentID}-{uuid}.
	AgentID string
	Logger  *slog.Logger
	Now     func() time.Time
	// CommitWindow bounds how long the committer waits for more writes to
	// join a batch, and it only waits when recent batches had several
	// writers (a lone writer never waits). Zero means DefaultCommitWindow;
	// negative never waits, so a batch is only what queued while the
	// previous commit was syncing.
	CommitWindow time.Duration
	Retention    RetentionSettings
	// Existing opens an existing database for operator tools: it is never
	// created or migrated, no background sweeps or checkpoints run, and
	// Close leaves the WAL to the agent.
	Existing bool
}

// Store is the durable queue database. All methods are safe for concurrent
// use; writes are group-committed by one goroutine.
type Store struct {
	path     string
	agentID  string
	existing bool
	holder   string // this process's lease holder id
	log      *slog.Logger
	now      func() time.Time
	window   time.Duration
	ret      RetentionSettings

	wdb   *sql.DB
	wconn *sql.Conn
	rdb   *sql.DB
	stmts map[string]*sql.Stmt // committer goroutine only
	// relaxedSync: the writer connection currently commits with
	// synchronous=NORMAL (committer goroutine only).
	relaxedSync bool
	// walLow: the writer connection has the low-disk WAL settings
	// (committer goroutine only); lowDisk says it should.
	walLow  bool
	lowDisk atomic.Bool

	mu     sync.RWMutex // guards closed against sends on ops
	closed bool
	ops    chan *op

	committerDone chan struct{}
	bgStop        chan struct{} // stops the sweeper and the checkpointer
	bg            sync.WaitGroup
	dirty         atomic.Bool // commits since the last background checkpoint

	leader atomic.Bool
	sweep  atomic.Pointer[SweepResult]
}

// Open opens or creates the database at opt.Path (file mode 0600, directory
// 0700), applies the pragmas (WAL, synchronous=FULL, busy timeout) and the
// migrations, and starts the committer, the retention sweeper and the
// background checkpointer.
func Open(opt Options) (*Store, error) {
	if opt.Path == "" {
		return nil, errors.New("spool: database path is required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.CommitWindow == 0 {
		opt.CommitWindow = DefaultCommitWindow
	}
	fresh, err := prepareFile(opt.Path, opt.Existing, opt.Logger)
	if err != nil {
		return nil, err
	}
	s := &Store{
		path:          opt.Path,
		existing:      opt.Existing,
		agentID:       opt.AgentID,
		holder:        uuid.NewString(),
		log:           opt.Logger,
		now:           opt.Now,
		window:        opt.CommitWindow,
		ret:           opt.Retention.withDefaults(),
		stmts:         map[string]*sql.Stmt{},
		ops:           make(chan *op, opQueue),
		committerDone: make(chan struct{}),
		bgStop:        make(chan struct{}),
	}
	if err := s.openDBs(opt.Existing, fresh); err != nil {
		s.closeDBs()
		return nil, err
	}
	if !opt.Existing {
		s.checkDiskFree()
	}
	go s.commitLoop()
	if !opt.Existing {
		s.bg.Go(s.sweepLoop)
		s.bg.Go(s.checkpointLoop)
	}
	return s, nil
}

// prepareFile creates the directory and an empty database file with private
// permissions before SQLite opens it, so the file never exists with the
// umask's mode; SQLite gives its -wal and -shm files the same mode. It
// reports whether the file is still empty.
func prepareFile(path string, existing bool, log *slog.Logger) (bool, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if fi.IsDir() {
			return false, fmt.Errorf("spool: %s is a directory", path)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				log.Warn("Cannot restrict queue database permissions", "path", path, "err", err)
			}
		}
		return fi.Size() == 0, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("spool: %w", err)
	case existing:
		return false, fmt.Errorf("%w: %s", ErrNoDatabase, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("spool: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("spool: %w", err)
	}
	if f != nil {
		return true, f.Close()
	}
	return true, nil
}

// dsn builds a modernc DSN. A fresh file gets incremental auto-vacuum, so
// that retention can return space to the file system; it has to be set
// before WAL mode, and setting it on a populated file would write to it.
func dsn(path string, writer, fresh bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	if fresh {
		q.Set("_auto_vacuum", "incremental")
	}
	if writer {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		// checkpointLoop keeps the WAL short; SQLite's own checkpoint, which
		// would stall the committing writer, is only a backstop.
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walBackstopPages))
		q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walSizeLimit))
		q.Add("_pragma", "temp_store(MEMORY)")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	// The path is passed through unescaped apart from the query marker, which
	// the driver would otherwise take as the start of the options.
	return strings.ReplaceAll(path, "?", "%3F") + "?" + q.Encode()
}

func (s *Store) openDBs(existing, fresh bool) error {
	ctx := context.Background()
	var err error
	if s.wdb, err = sql.Open("sqlite", dsn(s.path, true, fresh && !existing)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.wdb.SetMaxOpenConns(1)
	if s.wconn, err = s.wdb.Conn(ctx); err != nil {
		return fmt.Errorf("spool: opening %s: %w", s.path, err)
	}
	var mode string
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("spool: reading journal mode of %s: %w", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("spool: %s: journal mode is %q, WAL is required (is the file on a network share?)", s.path, mode)
	}
	if err := s.migrate(ctx, existing); err != nil {
		return err
	}
	if s.rdb, err = sql.Open("sqlite", dsn(s.path, false, false)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.rdb.SetMaxOpenConns(4)
	s.rdb.SetMaxIdleConns(2)
	return nil
}

func (s *Store) closeDBs() error {
	var errs []error
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	return errors.Join(errs...)
}

// Close stops the sweeper, commits the writes already submitted, folds the
// WAL into the database file and closes it. It does not release a dispatch
// lease; Dispatcher.Stop does.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.bgStop)
	s.bg.Wait()
	s.mu.Lock()
	close(s.ops)
	s.mu.Unlock()
	<-s.committerDone
	// Operator tools leave the WAL to the agent: a TRUNCATE checkpoint
	// would hold up its writes.
	if !s.existing && s.wconn != nil {
		if _, err := s.wconn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			s.log.Warn("Queue checkpoint on close failed", "err", err)
		}
	}
	return s.closeDBs()
}

// checkpointLoop copies committed WAL frames into the database file on a
// reader connection, off the commit path; once all are copied the writer
// starts the WAL over, so it stays short.
func (s *Store) checkpointLoop() {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-s.bgStop:
			return
		case <-t.C:
		}
		s.checkDiskFree()
		if !s.dirty.Swap(false) {
			continue
		}
		var busy, frames, copied int
		if err := s.rdb.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
			s.log.Warn("Queue checkpoint failed", "err", err)
		}
	}
}

// checkDiskFree sets lowDisk from the free space, with some hysteresis so
// that the setting does not flip back and forth.
func (s *Store) checkDiskFree() {
	free, ok := diskFree(filepath.Dir(s.path))
	switch {
	case !ok:
	case free < lowDiskBytes:
		s.lowDisk.Store(true)
	case free > 2*lowDiskBytes:
		s.lowDisk.Store(false)
	}
}

// op is one unit of work for the committer: fn runs inside the batch
// transaction, or alone outside any transaction when standalone (pragmas
// that cannot run inside one). fn may run more than once, when another op
// of its batch fails, so it must reset what it reports before writing it.
type op struct {
	fn         func(tx *wtx) error
	standalone bool
	// relaxed ops need not survive a power loss, only a crash: dispatch
	// state changes, whose loss recovery turns into a second delivery.
	relaxed bool
	done    chan error // nil for submitAsync
	state   atomic.Int32
}

// Op states: a submitter that gives up wins only while the op is pending,
// so fn never runs after its caller returned.
const (
	opPending int32 = iota
	opRunning
	opAbandoned
)

// write runs fn in the next group commit and returns once that commit is
// durable. If ctx ends before the committer takes the op, fn never runs and
// ctx's error is returned; once taken, write waits for the commit.
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) error {
	return s.submit(ctx, &op{fn: fn, done: make(chan error, 1)})
}

// writeRelaxed is write for changes that must survive a process crash but
// not a power loss: in WAL mode a commit with synchronous=NORMAL is in the
// operating system's hands when it returns, without an fsync. Only intake
// needs the fsync: it is what a device was told "accepted". A dispatch state
// change lost to a power cut is redone by recovery (at least once, never
// lost), and the next synced commit makes everything before it durable.
func (s *Store) writeRelaxed(ctx context.Context, fn func(tx *wtx) error) error {
	return s.submit(ctx, &op{fn: fn, relaxed: true, done: make(chan error, 1)})
}

// writeStandalone runs fn outside a transaction on the writer connection.
func (s *Store) writeStandalone(ctx context.Context, fn func(tx *wtx) error) error {
	return s.submit(ctx, &op{fn: fn, standalone: true, done: make(chan error, 1)})
}

// submitAsync queues fn for the next commit without waiting for it; a
// failure is logged. Ops keep their submission order.
func (s *Store) submitAsync(ctx context.Context, fn func(tx *wtx) error) error {
	return s.submit(ctx, &op{fn: fn, relaxed: true})
}

func (s *Store) submit(ctx context.Context, o *op) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	if o.done == nil {
		return nil
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opPending, opAbandoned) {
			return ctx.Err()
		}
		return <-o.done
	}
}

// commitLoop is the only user of the writer connection. A batch is the first
// waiting op plus whatever else is waiting when it starts.
func (s *Store) commitLoop() {
	defer close(s.committerDone)
	batch := make([]*op, 0, maxBatch)
	peak := 1 // recent batch size: the callers that tend to commit together
	for {
		first, ok := <-s.ops
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		open, synced := s.collect(&batch, peak)
		s.runBatch(batch)
		if synced > 0 {
			peak = max(synced, peak-1)
		}
		clear(batch)
		if !open {
			return
		}
	}
}

// collect fills batch with the ops waiting. When recent batches had more
// writers waiting for a sync it also waits, at most the commit window, for
// as many: callers released by the previous commit then join this one
// instead of alternating with the others in half-size batches. A lone
// caller, or a batch with nothing to sync, never waits. It reports false
// once ops is closed and drained, and how many ops of the batch need a sync.
func (s *Store) collect(batch *[]*op, target int) (bool, int) {
	target = min(target, maxBatch)
	for len(*batch) < maxBatch {
		select {
		case o, ok := <-s.ops:
			if !ok {
				return false, countSynced(*batch)
			}
			*batch = append(*batch, o)
			continue
		default:
		}
		break
	}
	// Only a sync is worth waiting for company: a relaxed commit is cheap.
	synced := countSynced(*batch)
	if s.window <= 0 || synced == 0 || synced >= target {
		return true, synced
	}
	t := time.NewTimer(s.window)
	defer t.Stop()
	for synced < target && len(*batch) < maxBatch {
		select {
		case o, ok := <-s.ops:
			if !ok {
				return false, synced
			}
			*batch = append(*batch, o)
			if !o.relaxed && !o.standalone {
				synced++
			}
		case <-t.C:
			return true, synced
		}
	}
	return true, synced
}

// countSynced counts the ops whose commit must be synced.
func countSynced(batch []*op) int {
	n := 0
	for _, o := range batch {
		if !o.relaxed && !o.standalone {
			n++
		}
	}
	return n
}

// runBatch commits the batch's ops in one transaction. An op that fails
// takes the transaction down with it, since its partial writes must go, and
// the others run again in a new one. Failures are rare, so this is cheaper
// than a savepoint around every op.
func (s *Store) runBatch(batch []*op) {
	if err := s.writer(); err != nil {
		for _, o := range batch {
			if o.state.CompareAndSwap(opPending, opRunning) {
				s.finish(o, err)
			}
		}
		return
	}
	s.tuneWAL()
	tx := &wtx{s: s, now: s.now()}
	var ops []*op
	for _, o := range batch {
		switch {
		case !o.state.CompareAndSwap(opPending, opRunning):
			// abandoned by its submitter
		case o.standalone:
			s.finish(o, o.fn(tx))
		default:
			ops = append(ops, o)
		}
	}
	s.setSync(ops)
	for len(ops) > 0 {
		failed, err := s.runTx(tx, ops)
		if storageFailure(err) {
			// Not this op's fault: the others would fail the same way.
			s.lowDisk.Store(true)
			s.resetWriter()
			failed = -1
		}
		if failed < 0 {
			for _, o := range ops {
				s.finish(o, err)
			}
			return
		}
		s.finish(ops[failed], err)
		ops = slices.Delete(ops, failed, failed+1)
	}
}

// storageFailure reports a full disk or an I/O error, after which SQLite
// can leave the connection's pager in its error state: every later write
// fails the same way even once space is freed.
func storageFailure(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR:
		return true
	}
	return false
}

// resetWriter drops the writer connection after a storage failure; the
// next batch opens a fresh one, which rereads the database from disk.
func (s *Store) resetWriter() {
	for _, st := range s.stmts {
		_ = st.Close()
	}
	clear(s.stmts)
	// ErrBadConn makes the pool discard the connection instead of keeping it.
	_ = s.wconn.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.wconn.Close()
	s.wconn = nil
	s.log.Warn("Reopening the queue database after a storage error")
}

// writer makes sure the committer has a connection.
func (s *Store) writer() error {
	if s.wconn != nil {
		return nil
	}
	conn, err := s.wdb.Conn(context.Background())
	if err != nil {
		return fmt.Errorf("spool: reopening %s: %w", s.path, err)
	}
	s.wconn, s.relaxedSync, s.walLow = conn, false, false // as the DSN sets them
	// Fold the WAL into the database and truncate it: after a full disk it
	// is often the WAL that holds the space.
	if _, err := conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		s.log.Warn("Queue checkpoint after a storage error failed", "err", err)
	}
	return nil
}

// tuneWAL applies the WAL settings for the disk's free space.
func (s *Store) tuneWAL() {
	low := s.lowDisk.Load()
	if low == s.walLow {
		return
	}
	pages, limit := walBackstopPages, walSizeLimit
	if low {
		pages, limit = lowDiskWALPages, 0
	}
	if err := errors.Join(s.pragma(fmt.Sprintf("wal_autocheckpoint=%d", pages)),
		s.pragma(fmt.Sprintf("journal_size_limit=%d", limit))); err != nil {
		s.log.Warn("Cannot change the queue's WAL settings", "err", err)
		return
	}
	s.walLow = low
	if low {
		s.log.Warn("Little disk space left for the queue: checkpointing often", "path", s.path)
	}
}

// pragma sets a pragma on the writer connection. It is not a cached
// statement: SQLite applies a setting while preparing it.
func (s *Store) pragma(setting string) error {
	_, err := s.wconn.ExecContext(context.Background(), "PRAGMA "+setting)
	return err
}

// setSync commits the next transaction with synchronous=FULL when any of
// ops needs it, NORMAL otherwise.
func (s *Store) setSync(ops []*op) {
	relaxed := !slices.ContainsFunc(ops, func(o *op) bool { return !o.relaxed })
	if len(ops) == 0 || relaxed == s.relaxedSync {
		return
	}
	level := "FULL"
	if relaxed {
		level = "NORMAL"
	}
	if err := s.pragma("synchronous=" + level); err != nil {
		s.log.Warn("Cannot change the queue's sync level", "level", level, "err", err)
		return
	}
	s.relaxedSync = relaxed
}

// runTx runs ops in one transaction. It returns the index of the op that
// failed, after rolling back, or -1 and the outcome of the commit.
func (s *Store) runTx(tx *wtx, ops []*op) (int, error) {
	if err := tx.exec("BEGIN IMMEDIATE"); err != nil {
		return -1, fmt.Errorf("spool: begin: %w", err)
	}
	for i, o := range ops {
		if err := o.fn(tx); err != nil {
			// After SQLITE_FULL or an I/O error SQLite may have rolled
			// back already; the error of this ROLLBACK then says so.
			_ = tx.exec("ROLLBACK")
			return i, err
		}
	}
	if err := tx.exec("COMMIT"); err != nil {
		_ = tx.exec("ROLLBACK")
		return -1, fmt.Errorf("spool: commit: %w", err)
	}
	s.dirty.Store(true)
	return -1, nil
}

func (s *Store) finish(o *op, err error) {
	if o.done != nil {
		o.done <- err
	} else if err != nil {
		s.log.Warn("Queue write failed", "err", err)
	}
}

// wtx gives ops access to the writer connection. now is the batch's clock
// reading, shared by all ops in it.
type wtx struct {
	s   *Store
	now time.Time
}

func (tx *wtx) nowMs() int64 { return tx.now.UnixMilli() }

// stmt returns a cached prepared statement; queries are constants of this
// package, so the cache is bounded.
func (tx *wtx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := tx.s.stmts[q]; ok {
		return st, nil
	}
	st, err := tx.s.wconn.PrepareContext(context.Background(), q)
	if err != nil {
		return nil, err
	}
	tx.s.stmts[q] = st
	return st, nil
}

func (tx *wtx) exec(q string, args ...any) error {
	_, err := tx.execResult(q, args...)
	return err
}

func (tx *wtx) execResult(q string, args ...any) (sql.Result, error) {
	st, err := tx.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(context.Background(), args...)
}

func (tx *wtx) changes(q string, args ...any) (int64, error) {
	r, err := tx.execResult(q, args...)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

func (tx *wtx) queryRow(q string, args ...any) *sql.Row {
	st, err := tx.stmt(q)
	if err != nil {
		// Surface the prepare error through Scan.
		return tx.s.wconn.QueryRowContext(context.Background(), q, args...)
	}
	return st.QueryRowContext(context.Background(), args...)
}

func (tx *wtx) query(q string, args ...any) (*sql.Rows, error) {
	st, err := tx.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(context.Background(), args...)
}
