package store

import "github.com/lib/pq"

// Own exposes own to the tests of package store_test.
func (s *Store) Own(n *pq.Notification) bool { return s.own(n) }

// NotifyPID exposes the backend pid of the connection notifyLoop sends over (zero: none).
func (s *Store) NotifyPID() int32 { return s.notifyPID.Load() }
