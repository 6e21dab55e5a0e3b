package store

import "github.com/lib/pq"

// Own exposes own to the tests of package store_test.
func (s *Store) Own(n *pq.Notification) bool { return s.own(n) }
