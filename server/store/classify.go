package store

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"net"
	"syscall"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/gatehouse/gatehouse/server/errs"
)

// Classify tells what a database error means to the caller: KindAborted for a conflict with a
// concurrent transaction that a retry can get past (a PostgreSQL deadlock or serialization failure,
// a lock wait that ran out), KindUnavailable when the database cannot answer now (SQLite busy or
// locked, a PostgreSQL connection refused, broken or shut down, too many connections, a statement
// that ran past statement_timeout), and
// KindInternal for anything else, including errors that are not database errors at all. The
// transport maps the first two to ABORTED and UNAVAILABLE instead of INTERNAL.
func Classify(err error) errs.Kind {
	if err == nil {
		return errs.KindInternal
	}
	if pe, ok := errors.AsType[*pq.Error](err); ok {
		return classifyPostgres(pe)
	}
	if se, ok := errors.AsType[*sqlite.Error](err); ok {
		switch se.Code() & 0xff { // the primary code of an extended result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return errs.KindUnavailable
		}
		return errs.KindInternal
	}
	// NOTE: lib/pq reports a FATAL server message (57P01 admin shutdown, 57P03 cannot connect now)
	// and a connection that broke mid-statement as driver.ErrBadConn; database/sql reports a
	// transaction whose connection is gone as sql.ErrConnDone; a dial that failed is a *net.OpError.
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		return errs.KindUnavailable
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return errs.KindUnavailable
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return errs.KindUnavailable
	}
	return errs.KindInternal
}

// classifyPostgres classifies an error the PostgreSQL server sent, by its SQLSTATE.
func classifyPostgres(e *pq.Error) errs.Kind {
	switch e.Code {
	case pqerror.TRDeadlockDetected, pqerror.TRSerializationFailure,
		pqerror.LockNotAvailable: // lock_timeout ran out
		return errs.KindAborted
	case pqerror.AdminShutdown, pqerror.CrashShutdown, pqerror.CannotConnectNow, pqerror.TooManyConnections,
		pqerror.QueryCanceled: // statement_timeout ran out (or the statement was cancelled)
		return errs.KindUnavailable
	}
	if len(e.Code) == 5 && e.Code.Class() == pqerror.ClassConnectionException {
		return errs.KindUnavailable
	}
	return errs.KindInternal
}
