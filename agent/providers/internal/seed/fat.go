// Package seed owns the cloud-init NoCloud seed the providers attach to
// every VM: a FAT image labelled CIDATA holding user-data, meta-data and
// network-config, written in pure Go.
package seed

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// File is one file of the cloud-init NoCloud seed.
type File struct {
	Name string
	Data []byte
}

// WriteFAT writes a FAT12 filesystem labelled label (at most 11
// characters) holding files in its root directory, with VFAT long names so
// cloud-init finds "user-data", "meta-data" and "network-config". It is the
// pure-Go equivalent of `mkdosfs -n CIDATA -C img 8192` plus mcopy.
func WriteFAT(w io.Writer, label string, files []File) error {
	const (
		sector     = 512
		rootEnts   = 512
		rootSecs   = rootEnts * 32 / sector
		reserved   = 1
		numFATs    = 2
		maxCluster = 4084 // FAT12 limit
	)
	if len(label) > 11 {
		return fmt.Errorf("fat label %q longer than 11 characters", label)
	}
	if len(files) > 60 {
		return fmt.Errorf("fat image: %d files is too many for the root directory", len(files))
	}
	var need int64
	for _, f := range files {
		need += int64(len(f.Data)) + sector
	}
	// Pick a cluster size that keeps the cluster count within FAT12.
	total := int64(2048) // 1 MiB minimum
	spc := int64(1)
	for {
		dataSecs := total - reserved - rootSecs - numFATs*12
		if dataSecs/spc <= maxCluster && dataSecs*sector >= need+int64(len(files))*spc*sector {
			break
		}
		if dataSecs/spc > maxCluster {
			spc *= 2
			continue
		}
		total *= 2
		if total > 65535 {
			return fmt.Errorf("fat image: %d bytes of seed data is too large", need)
		}
	}
	clusters := (total - reserved - rootSecs - numFATs*1) / spc
	fatSecs := ((clusters+2)*3/2 + sector) / sector
	dataStart := reserved + numFATs*fatSecs + rootSecs
	clusters = (total - dataStart) / spc
	img := make([]byte, total*sector)

	// Boot sector / BPB.
	b := img[:sector]
	copy(b, []byte{0xEB, 0x3C, 0x90})
	copy(b[3:11], "NKUDO1.0")
	binary.LittleEndian.PutUint16(b[11:], sector)
	b[13] = byte(spc)
	binary.LittleEndian.PutUint16(b[14:], reserved)
	b[16] = numFATs
	binary.LittleEndian.PutUint16(b[17:], rootEnts)
	binary.LittleEndian.PutUint16(b[19:], uint16(total))
	b[21] = 0xF8
	binary.LittleEndian.PutUint16(b[22:], uint16(fatSecs))
	binary.LittleEndian.PutUint16(b[24:], 32) // sectors per track
	binary.LittleEndian.PutUint16(b[26:], 64) // heads
	b[36] = 0x80
	b[38] = 0x29
	binary.LittleEndian.PutUint32(b[39:], 0x6e6b7564) // volume id "nkud"
	copy(b[43:54], fmt.Sprintf("%-11s", strings.ToUpper(label)))
	copy(b[54:62], "FAT12   ")
	b[510], b[511] = 0x55, 0xAA

	fat := make([]byte, fatSecs*sector)
	setFAT := func(n int64, v uint16) {
		off := n * 3 / 2
		if n%2 == 0 {
			fat[off] = byte(v)
			fat[off+1] = fat[off+1]&0xF0 | byte(v>>8)&0x0F
		} else {
			fat[off] = fat[off]&0x0F | byte(v<<4)
			fat[off+1] = byte(v >> 4)
		}
	}
	setFAT(0, 0xFF8)
	setFAT(1, 0xFFF)

	root := img[(reserved+numFATs*fatSecs)*sector : dataStart*sector]
	ent := 0
	putEntry := func(e []byte) { copy(root[ent*32:], e); ent++ }
	vol := make([]byte, 32)
	copy(vol[:11], fmt.Sprintf("%-11s", strings.ToUpper(label)))
	vol[11] = 0x08
	putEntry(vol)

	next := int64(2)
	clusterBytes := spc * sector
	for i, f := range files {
		short := shortName(f.Name, i+1)
		for _, l := range lfnEntries(f.Name, short) {
			putEntry(l)
		}
		de := make([]byte, 32)
		copy(de[:11], short)
		de[11] = 0x20                                  // archive
		binary.LittleEndian.PutUint16(de[24:], 0x5B7A) // 2025-11-26, a fixed date keeps images reproducible
		binary.LittleEndian.PutUint16(de[16:], 0x5B7A)
		binary.LittleEndian.PutUint16(de[18:], 0x5B7A)
		binary.LittleEndian.PutUint32(de[28:], uint32(len(f.Data)))
		if len(f.Data) > 0 {
			n := (int64(len(f.Data)) + clusterBytes - 1) / clusterBytes
			if next+n-2 > clusters {
				return fmt.Errorf("fat image: out of space writing %s", f.Name)
			}
			binary.LittleEndian.PutUint16(de[26:], uint16(next))
			for c := int64(0); c < n; c++ {
				cl := next + c
				if c == n-1 {
					setFAT(cl, 0xFFF)
				} else {
					setFAT(cl, uint16(cl+1))
				}
				off := (dataStart + (cl-2)*spc) * sector
				lo := c * clusterBytes
				hi := min(lo+clusterBytes, int64(len(f.Data)))
				copy(img[off:], f.Data[lo:hi])
			}
			next += n
		}
		putEntry(de)
	}
	for i := int64(0); i < numFATs; i++ {
		copy(img[(reserved+i*fatSecs)*sector:], fat)
	}
	_, err := w.Write(img)
	return err
}

// shortName makes the 8.3 alias "USER-D~1" that goes with a long name.
func shortName(name string, n int) []byte {
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 32
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return -1
	}, name)
	tail := fmt.Sprintf("~%d", n)
	if len(base) > 8-len(tail) {
		base = base[:8-len(tail)]
	}
	return []byte(fmt.Sprintf("%-8s%-3s", base+tail, ""))
}

func lfnChecksum(short []byte) byte {
	var sum byte
	for _, c := range short[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// lfnEntries returns the long-name entries for name, in on-disk order (last part first).
func lfnEntries(name string, short []byte) [][]byte {
	u := utf16.Encode([]rune(name))
	if len(u)%13 != 0 {
		u = append(u, 0)
	}
	for len(u)%13 != 0 {
		u = append(u, 0xFFFF)
	}
	n := len(u) / 13
	sum := lfnChecksum(short)
	out := make([][]byte, 0, n)
	for i := n - 1; i >= 0; i-- {
		e := make([]byte, 32)
		e[0] = byte(i + 1)
		if i == n-1 {
			e[0] |= 0x40
		}
		e[11], e[13] = 0x0F, sum
		part := u[i*13 : i*13+13]
		offs := []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}
		for j, o := range offs {
			binary.LittleEndian.PutUint16(e[o:], part[j])
		}
		out = append(out, e)
	}
	return out
}
