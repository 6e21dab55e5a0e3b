package store

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"

	"github.com/lib/pq"
)

// stmtCacheSize bounds the prepared statements a PostgreSQL connection of the pool keeps.
const stmtCacheSize = 256

// maxCachedArgs bounds the arguments of a statement worth keeping prepared: longer ones are the
// multi-row inserts and long IN lists of batches, whose text varies with the batch and which run
// rarely; they run as before, prepared unnamed for the one call.
const maxCachedArgs = 32

// stmtCachingConnector opens the pool's PostgreSQL connections so that each prepares a statement
// with arguments once and reuses it, instead of lib/pq's two round trips per call (Parse and
// Describe, then Bind and Execute) with PostgreSQL parsing and planning the text every time.
//
// NOTE: issue 16's profile: lib/pq prepared every statement in a round trip of its own and
// PostgreSQL spent more time planning than executing. lib/pq's binary_parameters mode, which sends
// a call in one round trip, breaks jsonb parameters; prepared statements keep lib/pq's text
// encoding of parameters, typed by the statement's own description, exactly as the unnamed
// statement of each call did. Statements without arguments still go through the simple query
// protocol, which allows several statements in one text.
type stmtCachingConnector struct {
	base driver.Connector
}

// Connect implements driver.Connector.
func (c stmtCachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn)
}

// Driver implements driver.Connector.
func (c stmtCachingConnector) Driver() driver.Driver { return c.base.Driver() }

// lib/pq's connection implements all of these; the caching connection passes them through.
type pqConn interface {
	driver.Conn
	driver.ConnPrepareContext
	driver.QueryerContext
	driver.ExecerContext
	driver.ConnBeginTx
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

// pqRows are the interfaces lib/pq's rows implement, which guardedRows passes through.
type pqRows interface {
	driver.Rows
	driver.RowsNextResultSet
	driver.RowsColumnTypeScanType
	driver.RowsColumnTypeDatabaseTypeName
	driver.RowsColumnTypeLength
	driver.RowsColumnTypePrecisionScale
}

// errRowsOpen is the error of a statement started on a connection whose previous query's rows
// are still open.
var errRowsOpen = errors.New("store: a statement was started while the rows of another were open on the same connection; close them first")

// cachingConn is a lib/pq connection with its prepared statements, least recently used last.
type cachingConn struct {
	pqConn
	stmts map[string]*list.Element // of *cachedStmt
	lru   *list.List
	// rows are the rows of the connection's last query, and open whether they are still open.
	//
	// NOTE: lib/pq refuses some queries on a connection whose rows are still being read
	// ("there is already a query being processed"), but not those on a prepared statement, nor
	// any after a query with arguments. Without the refusal, the second query's messages would go
	// out while the first's answer is unread, and each would read the other's. Only one query's
	// rows can be open at a time, so one value per connection serves them all.
	rows guardedRows
	open bool
}

// guardedRows are the rows of a query on a caching connection: closing them lets the connection
// run the next statement.
type guardedRows struct {
	pqRows
	conn *cachingConn
}

// Close implements driver.Rows.
func (r *guardedRows) Close() error {
	r.conn.open = false
	return r.pqRows.Close()
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
}

func newCachingConn(conn driver.Conn) (driver.Conn, error) {
	pc, ok := conn.(pqConn)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("store: the PostgreSQL driver's connection lacks a method the statement cache needs")
	}
	c := &cachingConn{pqConn: pc, stmts: map[string]*list.Element{}, lru: list.New()}
	c.rows.conn = c
	return c, nil
}

// stmt returns the connection's prepared statement of query, preparing it on first use.
func (c *cachingConn) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	if el, ok := c.stmts[query]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*cachedStmt).stmt, nil
	}
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = c.lru.PushFront(&cachedStmt{query: query, stmt: st})
	if c.lru.Len() > stmtCacheSize {
		if err := c.evict(c.lru.Back()); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// evict closes a cached statement and forgets it.
func (c *cachingConn) evict(el *list.Element) error {
	cs := el.Value.(*cachedStmt)
	delete(c.stmts, cs.query)
	c.lru.Remove(el)
	return cs.stmt.Close()
}

// failed forgets query's statement after an error that says the server no longer holds it as
// prepared (a schema change under a cached plan, a statement the server dropped), so that the
// next call prepares it again.
func (c *cachingConn) failed(query string, err error) {
	pe, ok := errors.AsType[*pq.Error](err)
	if !ok || (pe.Code != "0A000" && pe.Code != "26000") {
		return
	}
	el, ok := c.stmts[query]
	if !ok {
		return
	}
	if pe.Code == "26000" {
		// The server no longer has it: nothing to close.
		delete(c.stmts, query)
		c.lru.Remove(el)
		return
	}
	// NOTE: after 0A000 the server still holds the statement: it is closed, not only forgotten,
	// or it would stay on the backend for the connection's life. A failure to close is left to
	// the next statement on the connection to find.
	_ = c.evict(el)
}

// QueryContext implements driver.QueryerContext.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if c.open {
		return nil, errRowsOpen
	}
	var rows driver.Rows
	var err error
	if len(args) == 0 || len(args) > maxCachedArgs {
		rows, err = c.pqConn.QueryContext(ctx, query, args)
	} else {
		var st driver.Stmt
		if st, err = c.stmt(ctx, query); err != nil {
			return nil, err
		}
		if rows, err = st.(driver.StmtQueryContext).QueryContext(ctx, args); err != nil {
			c.failed(query, err)
		}
	}
	if err != nil {
		return nil, err
	}
	// NOTE: the rows of every query are guarded, not only those of cached statements: lib/pq's
	// own check does not cover a query with arguments (its prepare step clears it before the rows
	// are read), nor a cached statement run while a query's rows are open.
	pr, ok := rows.(pqRows)
	if !ok {
		_ = rows.Close()
		return nil, errors.New("store: the PostgreSQL driver's rows lack a method the statement cache needs")
	}
	c.rows.pqRows, c.open = pr, true
	return &c.rows, nil
}

// ExecContext implements driver.ExecerContext.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if c.open {
		return nil, errRowsOpen
	}
	if len(args) == 0 || len(args) > maxCachedArgs {
		return c.pqConn.ExecContext(ctx, query, args)
	}
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := st.(driver.StmtExecContext).ExecContext(ctx, args)
	if err != nil {
		c.failed(query, err)
	}
	return res, err
}

// Close implements driver.Conn. The server frees the statements with the connection.
func (c *cachingConn) Close() error { return c.pqConn.Close() }
