// Polyfill for netstandard2.0: the ValueTask factory members net5.0+ has, as C# 14 static extension members.
// Linked into each library as Polyfills/ValueTaskFactories.cs.
#if NETSTANDARD2_0
namespace AsyncTools.Polyfills;

internal static class ValueTaskFactories
{
    extension(ValueTask)
    {
        public static ValueTask FromCanceled(CancellationToken cancellationToken) => new(Task.FromCanceled(cancellationToken));

        public static ValueTask<TResult> FromCanceled<TResult>(CancellationToken cancellationToken) => new(Task.FromCanceled<TResult>(cancellationToken));

        public static ValueTask FromException(Exception exception) => new(Task.FromException(exception));

        public static ValueTask<TResult> FromException<TResult>(Exception exception) => new(Task.FromException<TResult>(exception));
    }
}
#endif
