// Package ptyrun answers "how does a local backend run a child on a pseudo-terminal?": it
// starts a command as the leader of a new session whose controlling terminal is a fresh
// pty, under a limits.Group's limits, pumps keystrokes in and terminal output out, applies
// window sizes, and kills the whole session on cancellation. It is the PTY counterpart of
// limits.Run, shared by the bwrap and host backends.
//
// The master side is opened by hand (not with creack/pty's Open) and kept non-blocking in
// Go's poller, so reads honour deadlines and Close interrupts them: a background process
// that keeps the terminal open after the command exited must not hang Run.
package ptyrun

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/limits"
)

// Cmd is one child process to run on a terminal.
type Cmd struct {
	// Argv is the command; Path is Argv[0] resolved ("" means Argv[0]). As with
	// limits.Cmd, limit wrappers look Argv[0] up in Env's PATH when they prefix it.
	Argv []string
	Path string
	Dir  string
	Env  []string // the complete environment; nothing is inherited
	// Stdin carries keystrokes; nil means none (the terminal gets an end-of-file at once).
	Stdin io.Reader
	// Stdout receives everything the terminal prints. It must not be nil.
	Stdout io.Writer
	// Group applies limits; nil runs without limits.
	Group *limits.Group
	// Size is the initial window size; zero rows or columns leave the kernel's default.
	Size backend.WinSize
	// Resize delivers new sizes until closed or until Run returns; it may be nil.
	Resize <-chan backend.WinSize
	// NoCtty starts the child in a new session without a controlling terminal, for a
	// child that acquires the terminal itself (TIOCSCTTY) in a session of its own.
	NoCtty bool
}

// eof is the terminal's end-of-file character (VEOF, ^D by default).
const eof = 0x04

// Run runs c on a new pseudo-terminal and returns its exit code (128+signal for a
// signaled process). The child is a session leader with the terminal's slave side as its
// controlling terminal and as stdin, stdout and stderr. When c.Stdin reaches EOF, Run
// types the terminal's end-of-file character once the program has read everything before
// it (see typeInput), so a shell reading the terminal exits. When ctx ends, every process
// of the session gets SIGKILL and Run returns ctx.Err() wrapped. A missing executable is
// errdefs NotFound.
func Run(ctx context.Context, c Cmd) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("ptyrun: exec %s: %w", c.Argv[0], err)
	}
	master, slave, err := open()
	if err != nil {
		return -1, err
	}
	defer master.Close()
	if c.Size.Rows > 0 && c.Size.Cols > 0 {
		if err := setSize(master, c.Size); err != nil {
			slave.Close()
			return -1, err
		}
	}

	cmd := c.Group.Command(c.Argv, c.Path, c.Dir, c.Env)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// Setsid makes the child a session (and process group) leader; Setctty with Ctty 0
	// makes its stdin, the slave, its controlling terminal, so job control, ^C and
	// SIGWINCH reach the foreground process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: !c.NoCtty, Ctty: 0}
	release, err := c.Group.SysProcAttr(cmd.SysProcAttr)
	if err != nil {
		slave.Close()
		return -1, err
	}
	err = cmd.Start()
	release()
	if err != nil {
		slave.Close()
		return -1, limits.StartError("ptyrun", c.Argv[0], err)
	}
	pid := cmd.Process.Pid
	// Our copy of the slave stays open while the child runs: typeInput asks it how much
	// typed input is still unread and in which mode the terminal is. It is closed right
	// after the child exits, so the master then sees EIO once no other process holds it.
	var closeSlave sync.Once
	defer closeSlave.Do(func() { slave.Close() })

	stop := make(chan struct{}) // closed when Run returns: ends the helpers below
	defer close(stop)
	go typeInput(master, slave, c.Stdin, stop)
	if c.Resize != nil {
		go func() {
			for {
				select {
				case <-stop:
					return
				case sz, ok := <-c.Resize:
					if !ok {
						return
					}
					if sz.Rows > 0 && sz.Cols > 0 {
						_ = setSize(master, sz) // the kernel sends SIGWINCH
					}
				}
			}
		}()
	}
	var exited atomic.Bool
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		limits.Pump(c.Stdout, master, &exited)
	}()

	waitDone := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			killSession(pid)
		case <-waitDone:
		}
	}()
	werr := cmd.Wait()
	close(waitDone)
	closeSlave.Do(func() { slave.Close() })
	exited.Store(true)
	_ = master.SetReadDeadline(time.Now().Add(limits.OutputIdleGrace))
	<-outDone // output stops as in limits.Run: a background process may hold the terminal open
	if err := ctx.Err(); err != nil {
		// Processes that left the session leader's group (shell jobs) die with it.
		killSession(pid)
		return -1, fmt.Errorf("ptyrun: exec %s: %w", c.Argv[0], err)
	}
	return limits.ExitCode(cmd.ProcessState, werr)
}

// open returns a new pty pair. The master stays in non-blocking mode (never call its Fd
// method, which would switch it to blocking): ioctls go through SyscallConn.
func open() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ptyrun: open /dev/ptmx: %w", err)
	}
	var n uint32
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
			return err
		}
		n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN) // ptsname
		return err
	})
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("ptyrun: set up pty: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	slave, err = os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("ptyrun: open %s: %w", name, err)
	}
	return master, slave, nil
}

func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func setSize(master *os.File, sz backend.WinSize) error {
	err := control(master, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Rows, Col: sz.Cols})
	})
	if err != nil {
		return fmt.Errorf("ptyrun: set window size: %w", err)
	}
	return nil
}

// typeInput copies keystrokes to the terminal and, when they end, types end-of-file in a
// way that reaches the program however it reads the terminal. It is not waited for: in may
// block forever; writes fail once the master is closed.
//
// A VEOF character (^D) is end-of-file only to a reader in canonical mode, and only at the
// start of a line; a line editor (busybox ash, readline) reads in raw mode and treats a
// raw ^D on an empty line as end-of-file. A ^D typed in canonical mode and read after the
// program switched to raw mode arrives as a NUL byte (the line discipline stores it as a
// marker), and shells switch modes around every command. So end-of-file is typed only
// when all earlier input was read, and typed again whenever the previous one was read
// in a different mode than the one it was typed in: as with a closed pipe, a program that
// keeps reading keeps seeing end-of-file.
func typeInput(master, slave *os.File, in io.Reader, stop <-chan struct{}) {
	var last byte = '\n'
	if in != nil {
		buf := make([]byte, 32<<10)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				if _, werr := master.Write(buf[:n]); werr != nil {
					return
				}
				last = buf[n-1]
			}
			if err != nil {
				break
			}
		}
	}
	const maxEOFs = 64 // bounds a program that flips modes and reads forever
	sent, sentCanon := 0, false
	delay := 5 * time.Millisecond
	for sent < maxEOFs {
		select {
		case <-stop:
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
		unread, canon, veof, err := inputState(slave)
		if err != nil {
			return // the slave was closed: the child exited
		}
		if unread > 0 || (sent > 0 && canon == sentCanon) {
			continue
		}
		seq := []byte{veof}
		if sent == 0 && canon && last != '\n' && last != '\r' {
			// The first ^D delivers the unfinished line; the second is end-of-file.
			seq = []byte{veof, veof}
		}
		if _, err := master.Write(seq); err != nil {
			return
		}
		sent++
		sentCanon = canon
		delay = 5 * time.Millisecond
	}
}

// inputState reports how many typed bytes the program has not read yet (in canonical
// mode: complete lines only), whether the terminal is in canonical mode, and its VEOF
// character.
func inputState(slave *os.File) (unread int, canon bool, veof byte, err error) {
	err = control(slave, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return err
		}
		canon = t.Lflag&unix.ICANON != 0
		veof = t.Cc[unix.VEOF]
		if veof == 0 { // _POSIX_VDISABLE: fall back to the usual ^D
			veof = eof
		}
		unread, err = unix.IoctlGetInt(fd, unix.TIOCINQ)
		return err
	})
	return unread, canon, veof, err
}

// killSession SIGKILLs the session led by sid: its process group and the processes an
// interactive shell moved into groups of their own (jobs), found by their session id.
func killSession(sid int) {
	_ = syscall.Kill(-sid, syscall.SIGKILL)
	for _, pid := range sessionMembers(sid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// sessionMembers lists the processes whose session id is sid, from /proc/<pid>/stat.
func sessionMembers(sid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may contain spaces and parentheses: fields start after the last
		// ')'. They are: state ppid pgrp session ...
		s := string(b)
		j := strings.LastIndexByte(s, ')')
		if j < 0 {
			continue
		}
		f := strings.Fields(s[j+1:])
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			out = append(out, pid)
		}
	}
	return out
}
