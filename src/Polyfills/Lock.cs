// Polyfill for netstandard2.0: System.Threading.Lock (net9.0+), which the C# compiler lowers `lock (x)` to
// x.EnterScope() for. On netstandard2.0 it is a thin wrapper over Monitor, so primitives declare
// `private readonly Lock _sync = new();` once and get the faster Lock on net10.0 with no #if.
#if NETSTANDARD2_0
#pragma warning disable IDE0161, CA1001, CA1815, CA1034
namespace System.Threading
{
    internal sealed class Lock
    {
        private readonly object _monitor = new();

        public bool IsHeldByCurrentThread => Monitor.IsEntered(_monitor);

        public void Enter() => Monitor.Enter(_monitor);

        public void Exit() => Monitor.Exit(_monitor);

        public Scope EnterScope()
        {
            Monitor.Enter(_monitor);
            return new Scope(this);
        }

        public ref struct Scope
        {
            private Lock? _owner;

            internal Scope(Lock owner) => _owner = owner;

            public void Dispose()
            {
                Lock? owner = _owner;
                if (owner is not null)
                {
                    _owner = null;
                    owner.Exit();
                }
            }
        }
    }
}
#endif
