using Lasp2.Research;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>The allocator settings the library applies when it loads (NativeHeap).</summary>
public class NativeHeapTests
{
    [Fact]
    public void TheLibraryTunesTheAllocatorWhenItLoads()
    {
        // The test host sets no MALLOC_* variables, so the settings must have been applied.
        Assert.Equal("tuned", NativeHeap.State);
    }
}
