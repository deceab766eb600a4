// Polyfill for netstandard2.0: System.Threading.IThreadPoolWorkItem (netcoreapp3.0+), which an internal type implements
// to be queued to the thread pool as itself, with no wrapper allocated per queueing (Compat.UnsafeQueue). On
// netstandard2.0 the pool has no such overload, and Compat wraps it.
#if NETSTANDARD2_0
#pragma warning disable IDE0161
namespace System.Threading
{
    internal interface IThreadPoolWorkItem
    {
        void Execute();
    }
}
#endif
