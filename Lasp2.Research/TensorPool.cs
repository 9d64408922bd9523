using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research;

/// <summary>
/// Large CPU tensors over memory that is kept and reused once libtorch frees them, so an iteration that needs the
/// same large tensors as the last one finds them already faulted in. The chunked kernel's outputs, gradients and
/// block states (each [B,H,C,D], 128 MiB at N = 64K, h = 8, d = 64) come from here.
/// Why not glibc's heap: even tuned (<see cref="NativeHeap"/>), it grows for about ten iterations before such a
/// pattern fits, because small blocks settle in the holes the large ones leave (measured: heap 3.0 GiB for
/// 0.57 GiB in use, 50-100k faults per iteration until then). Here each large tensor gets its own mapping, and a
/// freed mapping goes back to a free list of its size (libtorch calls <see cref="Release"/> when the last
/// reference to the storage goes, on whichever thread drops it), so there are no holes to fill.
/// Mappings ask for transparent huge pages (a first touch faults 2 MiB at once where the system allows it).
/// Free mappings beyond <see cref="NativeHeap.KeepBytes"/> are returned to the system. Off (plain <c>empty</c>) with
/// LASP2_NATIVE_HEAP=default (<see cref="NativeHeap.OptedOut"/>) and off Linux; on whatever the MALLOC_* settings.
/// Written by hand: libtorch's CPU allocator has no cache, and TorchSharp exposes no allocator hook; this uses
/// TorchSharp's own from_blob entry (a tensor over given memory with a release callback).
/// </summary>
public static unsafe partial class TensorPool
{
    /// <summary>Smaller tensors come from glibc's heap, which reuses them without faulting.</summary>
    public const long MinBytes = 4L << 20;

    /// <summary>Mappings are sized in whole huge pages, so one free list serves every tensor of a size class.</summary>
    const long Granule = 2L << 20;

    static readonly bool Enabled = OperatingSystem.IsLinux() && !NativeHeap.OptedOut;
    static readonly Lock Gate = new();
    static readonly Dictionary<long, Stack<nint>> Free = [];      // mapping size -> free mappings
    static readonly Dictionary<nint, long> Sizes = [];            // every live mapping -> its size
    static long freeBytes;                                        // free mappings kept, at most NativeHeap.KeepBytes

    /// <summary>
    /// An uninitialised tensor like <c>torch.empty</c>; from the pool when it is on, the device is the CPU and the
    /// tensor has at least <see cref="MinBytes"/>.
    /// </summary>
    public static Tensor Empty(long[] shape, ScalarType dtype, Device device)
    {
        long bytes = shape.Aggregate(1L, (a, b) => a * b) * dtype.ElementSize();
        if (!Enabled || device.type != DeviceType.CPU || bytes < MinBytes) return empty(shape, dtype: dtype, device: device);
        long size = (bytes + Granule - 1) / Granule * Granule;
        var data = Take(size);
        nint handle;
        fixed (long* sizes = shape)
            handle = THSTensor_new(data, &Release, sizes, shape.Length, (sbyte)dtype, (sbyte)dtype, 0, 0, false);
        if (handle == 0)
        {
            Return(data);
            throw new InvalidOperationException($"libtorch refused a tensor of shape [{string.Join(",", shape)}] over pooled memory.");
        }
        return Tensor.UnsafeCreateTensor(handle);
    }

    /// <summary>An uninitialised tensor of <paramref name="like"/>'s shape, dtype and device (<see cref="Empty"/>).</summary>
    public static Tensor EmptyLike(Tensor like) => Empty(like.shape, like.dtype, like.device);

    static nint Take(long size)
    {
        lock (Gate)
        {
            if (Free.TryGetValue(size, out var free) && free.Count > 0)
            {
                freeBytes -= size;
                return free.Pop();
            }
        }
        var data = mmap(0, (nuint)size, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (data == -1) throw new OutOfMemoryException($"mmap of {size >> 20} MiB for a pooled tensor failed (errno {Marshal.GetLastPInvokeError()}).");
        madvise(data, (nuint)size, MadvHugePage);                                            // a hint: refused where huge pages are off
        lock (Gate) Sizes[data] = size;
        return data;
    }

    /// <summary>libtorch's release callback (<see cref="Return"/>).</summary>
    [UnmanagedCallersOnly]
    static void Release(nint data) => Return(data);

    /// <summary>A freed mapping goes back to its free list, or to the system beyond the keep size.</summary>
    static void Return(nint data)
    {
        long size;
        lock (Gate)
        {
            size = Sizes[data];
            if (freeBytes + size <= NativeHeap.KeepBytes)
            {
                if (!Free.TryGetValue(size, out var free)) Free[size] = free = new Stack<nint>();
                free.Push(data);
                freeBytes += size;
                return;
            }
            Sizes.Remove(data);
        }
        munmap(data, (nuint)size);
    }

    const int ProtRead = 1, ProtWrite = 2, MapPrivate = 2, MapAnonymous = 0x20, MadvHugePage = 14;

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc")]
    private static partial int munmap(nint address, nuint length);

    [LibraryImport("libc")]
    private static partial int madvise(nint address, nuint length, int advice);

    /// <summary>TorchSharp's native from_blob: a tensor over <paramref name="data"/>, calling <paramref name="deleter"/> when its storage is freed.</summary>
    [LibraryImport("LibTorchSharp")]
    private static partial nint THSTensor_new(nint data, delegate* unmanaged<nint, void> deleter, long* sizes, int dimensions,
                                               sbyte dataType, sbyte dtype, int deviceType, int deviceIndex,
                                               [MarshalAs(UnmanagedType.U1)] bool requiresGrad);
}
