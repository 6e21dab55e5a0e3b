package testpg

import "testing"

// Halt stops the server of a throwaway cluster (pg_ctl stop -m fast: every connection is cut)
// without deleting it, so that a test can watch clients through an outage; Resume starts it
// again on the same port with the same data. Use them on a cluster of NewCluster, never on the
// shared one.
func (c *Cluster) Halt(t testing.TB) {
	t.Helper()
	if c.external {
		t.Fatalf("testpg: Halt needs a throwaway cluster, not the external server of %s", EnvDatabaseURL)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.admin != nil {
		c.admin.Close()
		c.admin = nil
	}
	logStart := fileSize(c.logFile)
	if out, err := c.run(c.pgCtl, "stop", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60"); err != nil {
		t.Fatalf("testpg: pg_ctl stop: %v\n%s\nserver log:\n%s", err, out, logTail(c.logFile, logStart))
	}
}

// Resume starts a cluster stopped by Halt.
func (c *Cluster) Resume(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	logStart := fileSize(c.logFile)
	out, err := c.run(c.pgCtl, "start", "-D", c.dataDir, "-l", c.logFile, "-w", "-t", "60", "-o", c.serverOptions())
	if err != nil {
		t.Fatalf("testpg: pg_ctl start: %v\n%s\nserver log:\n%s", err, out, logTail(c.logFile, logStart))
	}
	db, err := openAndPing(c.adminDSN)
	if err != nil {
		t.Fatalf("testpg: after Resume: %v\nserver log:\n%s", err, logTail(c.logFile, logStart))
	}
	c.admin = db
}
