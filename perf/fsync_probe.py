#!/usr/bin/env python3
# How fast fdatasync completes with 1..4 writers on one file, after direct
# I/O into fallocated (unwritten) space and into space already written with
# zeros: the reasons the log overlaps its syncs (LOG_SYNCS_IN_FLIGHT_MAX)
# and writes zeros ahead of its batches (LOG_ZERO_AHEAD_BYTES).
# Usage: [FSYNCS=150] [MODES="fallocate written"] [THREADS="1 2 3 4"]
#        python3 perf/fsync_probe.py [DIR] (default /tmp).
import os,time,threading,mmap,sys
def run(nthreads, mode, n=int(os.environ.get('FSYNCS', '150'))):
    path=os.path.join(sys.argv[1] if len(sys.argv) > 1 else '/tmp', 'fsync-probe.test')
    fd=os.open(path,os.O_CREAT|os.O_RDWR|os.O_TRUNC|os.O_DIRECT)
    if mode=='fallocate': os.posix_fallocate(fd,0,64<<20)
    else:
        buf=mmap.mmap(-1,1<<20)
        for i in range(64): os.pwrite(fd,buf,i<<20)
    os.fsync(fd)
    lat=[]; off=[0]; lock=threading.Lock()
    def worker(k):
        buf=mmap.mmap(-1,4096); buf.write(b'y'*4096)
        for i in range(n):
            with lock:
                o=off[0]; off[0]+=4096
            os.pwrite(fd,buf,o); t=time.perf_counter(); os.fdatasync(fd); lat.append(time.perf_counter()-t)
    t0=time.perf_counter()
    ths=[threading.Thread(target=worker,args=(k,)) for k in range(nthreads)]
    [t.start() for t in ths]; [t.join() for t in ths]
    el=time.perf_counter()-t0
    lat.sort()
    print(f"{mode} {nthreads} threads: {nthreads*n/el:.0f} fsyncs/s, p50 {lat[len(lat)//2]*1e3:.2f} ms p90 {lat[len(lat)*9//10]*1e3:.2f}"
          f" p99 {lat[len(lat)*99//100]*1e3:.2f} max {lat[-1]*1e3:.2f}")
    os.close(fd); os.unlink(path)
for r in range(2):
  for t in [int(t) for t in os.environ.get('THREADS', '1 2 3 4').split()]:
    for mode in os.environ.get('MODES', 'fallocate written').split():
      run(t, mode)
