-- What each host booted (`/run/booted-system`, sent with its heartbeats since issue 20):
-- differs from what it runs when a switch left the kernel or initrd for the next boot.
ALTER TABLE host_presence ADD COLUMN booted_closure TEXT;
