package send

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
)

// file is a candidate for sending: a regular file named on the command line
// or found under a directory. err is set when it could not be listed.
type file struct {
	path string
	size int64
	err  error
}

// files yields the files to send, in argument order and, inside each
// directory, in lexical order. Inside directories, hidden entries (name
// starting with a dot: .DS_Store, .git...) are skipped, and so are
// symbolic links to directories, which could loop; a symbolic link to a
// file is followed. A path named on the command line is always used.
func files(paths []string) iter.Seq[file] {
	return func(yield func(file) bool) {
		for _, root := range paths {
			if !walkRoot(root, yield) {
				return
			}
		}
	}
}

func walkRoot(root string, yield func(file) bool) bool {
	fi, err := os.Stat(root)
	switch {
	case err != nil:
		return yield(file{path: root, err: err})
	case fi.Mode().IsRegular():
		return yield(file{path: root, size: fi.Size()})
	case !fi.IsDir():
		return yield(file{path: root, err: errors.New("not a regular file or directory")})
	}
	more := true
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			more = yield(file{path: p, err: err})
		} else if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		} else if !d.IsDir() {
			more = yieldEntry(p, d, yield)
		}
		if !more {
			return filepath.SkipAll
		}
		return nil
	})
	return more
}

// yieldEntry yields a directory entry if it is, or links to, a regular file.
func yieldEntry(p string, d fs.DirEntry, yield func(file) bool) bool {
	var fi fs.FileInfo
	var err error
	if d.Type()&fs.ModeSymlink != 0 {
		fi, err = os.Stat(p)
	} else {
		fi, err = d.Info()
	}
	switch {
	case err != nil:
		return yield(file{path: p, err: err})
	case fi.Mode().IsRegular():
		return yield(file{path: p, size: fi.Size()})
	}
	return true // sockets, devices, links to directories
}

// mediaStorageDirectory is the SOP class of a DICOMDIR, which indexes the
// instances of a medium and is not itself sent.
const mediaStorageDirectory = "1.2.840.10008.1.3.10"

// openInstance opens a Part-10 file and returns its meta information and
// the dataset that follows it. The caller closes f.
func openInstance(path string) (f *os.File, meta dicom.FileMeta, dataset io.Reader, err error) {
	f, err = os.Open(path)
	if err != nil {
		return nil, meta, nil, err
	}
	meta, dataset, err = dicom.ReadPart10Header(f)
	switch {
	case err != nil:
	case !dicom.ValidUID(meta.SOPClass):
		err = fmt.Errorf("file meta has no valid media storage SOP class UID (0002,0002): %q", meta.SOPClass)
	case !dicom.ValidUID(meta.SOPInstance):
		err = fmt.Errorf("file meta has no valid media storage SOP instance UID (0002,0003): %q", meta.SOPInstance)
	case !dicom.ValidUID(meta.TransferSyntax):
		err = fmt.Errorf("file meta has an invalid transfer syntax UID (0002,0010): %q", meta.TransferSyntax)
	}
	if err != nil {
		f.Close()
		return nil, meta, nil, err
	}
	return f, meta, dataset, nil
}
